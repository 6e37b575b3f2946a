/* SPDX-License-Identifier: MIT */
/* vmctl completion bash|zsh|fish: a completion script generated from the command table. The
 * commands and subcommands come from the table, each one's options from the "Options:" part of
 * its help (the same text `--help` prints), VM names from `vmctl list -q` at completion time, and
 * error codes from the catalogue. Nothing is kept by hand in a second place. */
#include <ctype.h>

#include "cli.h"
#include "render.h"

const char cmd_completion_help[] =
    "Usage: vmctl completion bash|zsh|fish\n"
    "\n"
    "Print a completion script for the shell: commands, subcommands, each command's options,\n"
    "VM names (from `vmctl list -q`, in the --home given on the line), error codes and files.\n"
    "Load it in the running shell, or install it where the shell looks for completions.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  source <(vmctl completion bash)\n"
    "  vmctl completion bash > /etc/bash_completion.d/vmctl\n"
    "  vmctl completion zsh > \"${fpath[1]}/_vmctl\"\n"
    "  vmctl completion fish > ~/.config/fish/completions/vmctl.fish\n";

#define MAX_OPTS 64

typedef struct copt {
    char name[48]; /* "--env" or "-i" */
    bool value;    /* takes a value */
} copt;

/* The options of a help text: the lines of its "...options:" sections that start with '-'. */
static size_t help_options(const char *help, copt *out, size_t max)
{
    size_t n = 0;
    bool in_section = false;
    for (const char *line = help; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len == 0) {
            in_section = false;
        } else if (len >= 8 && strncasecmp(line + len - 8, "options:", 8) == 0) {
            in_section = true;
        } else if (in_section) {
            const char *p = line, *end = line + len;
            while (p < end && *p == ' ')
                p++;
            copt *first = out + n;
            while (p < end && *p == '-' && n < max) {
                const char *q = p;
                while (q < end && (isalnum((unsigned char)*q) || *q == '-'))
                    q++;
                size_t l = (size_t)(q - p);
                if (l < 2 || l >= sizeof(out[n].name))
                    break;
                memcpy(out[n].name, p, l);
                out[n].name[l] = '\0';
                out[n].value = false;
                n++;
                if (q < end && *q == ',') {
                    p = q + 1;
                    while (p < end && *p == ' ')
                        p++;
                    continue;
                }
                /* one space and a word: the option's value (two spaces start the description) */
                if (q + 1 < end && q[0] == ' ' && q[1] != ' ')
                    for (copt *o = first; o < out + n; o++)
                        o->value = true;
                break;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return n;
}

/* Whether the command's first argument is an existing VM's name: 0 no, 1 one NAME, 2 NAME... or
 * [NAME...] (from its usage line; create and run name a new VM). */
static int takes_vm_name(const cli_command *cmd, const char *path)
{
    if (!cmd->help || strchr(path, ' ') || streq(path, "create") || streq(path, "run"))
        return 0;
    cleanup_free char *optional = cli_printf("Usage: vmctl %s [NAME...]", path);
    if (optional && strncmp(cmd->help, optional, strlen(optional)) == 0)
        return 2; /* stats: NAME... or none */
    cleanup_free char *usage = cli_printf("Usage: vmctl %s NAME", path);
    if (!usage || strncmp(cmd->help, usage, strlen(usage)) != 0)
        return 0;
    return strncmp(cmd->help + strlen(usage), "...", 3) == 0 ? 2 : 1;
}

/* One completion target: a command, or "image list" and the like. */
typedef struct target {
    char path[64];
    const cli_command *cmd;
    bool has_subs;
} target;

static size_t targets(target *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; cli_command_at(i); i++) {
        const cli_command *cmd = cli_command_at(i);
        if (!cmd->fn || n >= max)
            continue;
        out[n] = (target){.cmd = cmd, .has_subs = cmd->sub_at != NULL};
        snprintf(out[n].path, sizeof(out[n].path), "%s", cmd->name);
        n++;
        for (size_t j = 0; cmd->sub_at && cmd->sub_at(j) && n < max; j++) {
            const cli_command *sub = cmd->sub_at(j);
            if (!sub->fn)
                continue;
            out[n] = (target){.cmd = sub};
            snprintf(out[n].path, sizeof(out[n].path), "%s %s", cmd->name, sub->name);
            n++;
        }
    }
    return n;
}

static void print_words(FILE *f, const copt *o, size_t n, bool values_only)
{
    bool first = true;
    for (size_t i = 0; i < n; i++)
        if (!values_only || o[i].value) {
            fprintf(f, "%s%s", first ? "" : " ", o[i].name);
            first = false;
        }
}

static void print_subs(FILE *f, const cli_command *cmd)
{
    for (size_t j = 0; cmd->sub_at && cmd->sub_at(j); j++)
        if (cmd->sub_at(j)->fn)
            fprintf(f, "%s%s", j ? " " : "", cmd->sub_at(j)->name);
}

static void print_commands(FILE *f)
{
    bool first = true;
    for (size_t i = 0; cli_command_at(i); i++)
        if (cli_command_at(i)->fn) {
            fprintf(f, "%s%s", first ? "" : " ", cli_command_at(i)->name);
            first = false;
        }
}

static void print_codes(FILE *f)
{
    for (size_t i = 0; vmctl_error_catalogue(i); i++)
        fprintf(f, "%s%s", i ? " " : "", vmctl_error_catalogue(i)->code);
}

static const char global_words[] = "--home --json -v --verbose -h --help --version";

/* The shell-neutral part: for bash and zsh, a function that sets opts, vals, subs and names for
 * the command path in $path. */
static void print_case(FILE *f, const target *t, size_t n_t)
{
    fputs("    case \"$vpath\" in\n", f);
    for (size_t i = 0; i < n_t; i++) {
        copt o[MAX_OPTS];
        size_t n = help_options(t[i].cmd->help ? t[i].cmd->help : "", o, MAX_OPTS);
        fprintf(f, "    '%s') opts='", t[i].path);
        print_words(f, o, n, false);
        fputs("'; vals='", f);
        print_words(f, o, n, true);
        fputs("'", f);
        if (t[i].has_subs) {
            fputs("; subs='", f);
            print_subs(f, t[i].cmd);
            fputs("'", f);
        }
        if (takes_vm_name(t[i].cmd, t[i].path))
            fprintf(f, "; names=%d", takes_vm_name(t[i].cmd, t[i].path));
        if (streq(t[i].path, "errors"))
            fputs("; wlist=$vcodes", f);
        if (streq(t[i].path, "help"))
            fputs("; wlist=$vcommands", f);
        if (streq(t[i].path, "completion"))
            fputs("; wlist='bash zsh fish'", f);
        fputs(" ;;\n", f);
    }
    fputs("    esac\n", f);
}

/* Both shells walk the words the same way: skip options (and --home's value), the first word
 * is the command, the next its subcommand when it has some. */
static void print_body(FILE *f, const target *t, size_t n_t, const char *words, int first)
{
    fputs("    local vcommands='", f);
    print_commands(f);
    fputs("'\n    local vcodes='", f);
    print_codes(f);
    fprintf(
        f,
        "'\n"
        "    local globals='%s'\n"
        "    local cmd='' sub='' home='' npos=0 i w\n"
        "    for ((i = %d; i < cword; i++)); do\n"
        "        w=${%s[i]}\n"
        "        case $w in\n"
        "        --home) ((i++)); home=${%s[i]} ;;\n"
        "        --home=*) home=${w#--home=} ;;\n"
        "        -*) ;;\n"
        "        *) if [[ -z $cmd ]]; then cmd=$w\n"
        "           elif [[ -z $sub && \" image kdl network \" == *\" $cmd \"* ]]; then sub=$w\n"
        "           else ((npos++))\n"
        "           fi ;;\n"
        "        esac\n"
        "    done\n"
        "    local vpath=$cmd${sub:+ $sub} opts='' vals='' subs='' names=0 wlist=''\n",
        global_words, first, words, words);
    print_case(f, t, n_t);
}

static void print_bash(FILE *f, const target *t, size_t n_t)
{
    fputs("# bash completion for vmctl, generated by `vmctl completion bash`\n"
          "_vmctl() {\n"
          "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
          "    local cword=$COMP_CWORD\n",
          f);
    print_body(f, t, n_t, "COMP_WORDS", 1);
    fputs("    COMPREPLY=()\n"
          "    if [[ $prev == --home ]]; then\n"
          "        COMPREPLY=($(compgen -d -- \"$cur\")); return\n"
          "    fi\n"
          "    if [[ -n $vals && \" $vals \" == *\" $prev \"* ]]; then\n"
          "        COMPREPLY=($(compgen -f -- \"$cur\")); return\n"
          "    fi\n"
          "    if [[ $cur == -* ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$opts $globals\" -- \"$cur\")); return\n"
          "    fi\n"
          "    if [[ -z $cmd ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$vcommands\" -- \"$cur\")); return\n"
          "    fi\n"
          "    if [[ -n $subs && -z $sub ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$subs\" -- \"$cur\")); return\n"
          "    fi\n"
          "    if [[ -n $wlist ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$wlist\" -- \"$cur\")); return\n"
          "    fi\n"
          "    if ((names == 2 || (names == 1 && npos == 0))); then\n"
          "        COMPREPLY=($(compgen -W \"$(vmctl ${home:+--home=\"$home\"} list -q "
          "2>/dev/null)\" -- \"$cur\"))\n"
          "        return\n"
          "    fi\n"
          "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
          "}\n"
          "complete -o filenames -F _vmctl vmctl\n",
          f);
}

static void print_zsh(FILE *f, const target *t, size_t n_t)
{
    fputs("#compdef vmctl\n"
          "# zsh completion for vmctl, generated by `vmctl completion zsh`\n"
          "_vmctl() {\n"
          "    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}\n"
          "    local cword=$CURRENT\n",
          f);
    print_body(f, t, n_t, "words", 2);
    fputs("    if [[ $prev == --home ]]; then _directories; return; fi\n"
          "    if [[ -n $vals && \" $vals \" == *\" $prev \"* ]]; then _files; return; fi\n"
          "    if [[ $cur == -* ]]; then compadd -- ${=opts} ${=globals}; return; fi\n"
          "    if [[ -z $cmd ]]; then compadd -- ${=vcommands}; return; fi\n"
          "    if [[ -n $subs && -z $sub ]]; then compadd -- ${=subs}; return; fi\n"
          "    if [[ -n $wlist ]]; then compadd -- ${=wlist}; return; fi\n"
          "    if ((names == 2 || (names == 1 && npos == 0))); then\n"
          "        compadd -- ${(f)\"$(vmctl ${home:+--home=\"$home\"} list -q 2>/dev/null)\"}\n"
          "        return\n"
          "    fi\n"
          "    _files\n"
          "}\n"
          "if [[ $funcstack[1] == _vmctl ]]; then _vmctl \"$@\"; else compdef _vmctl vmctl; fi\n",
          f);
}

static void fish_condition(FILE *f, const target *t)
{
    const char *sp = strchr(t->path, ' ');
    if (sp)
        fprintf(f, "__fish_seen_subcommand_from %.*s; and __fish_seen_subcommand_from %s",
                (int)(sp - t->path), t->path, sp + 1);
    else
        fprintf(f, "__fish_seen_subcommand_from %s", t->path);
}

static void print_fish(FILE *f, const target *t, size_t n_t)
{
    fputs("# fish completion for vmctl, generated by `vmctl completion fish`\n"
          "complete -c vmctl -e\n"
          "complete -c vmctl -f\n"
          "complete -c vmctl -l home -r -F -d 'use DIR as the vmctl home'\n"
          "complete -c vmctl -l json -d 'print one JSON document'\n"
          "complete -c vmctl -s v -l verbose -d 'debug and info messages'\n"
          "complete -c vmctl -s h -l help -d 'show help'\n"
          "complete -c vmctl -l version -d 'print the version'\n",
          f);
    for (size_t i = 0; cli_command_at(i); i++) {
        const cli_command *cmd = cli_command_at(i);
        if (!cmd->fn)
            continue;
        fprintf(f, "complete -c vmctl -n __fish_use_subcommand -a %s -d '", cmd->name);
        for (const char *p = cmd->summary; p && *p; p++) {
            if (*p == '\'' || *p == '\\')
                fputc('\\', f);
            fputc(*p, f);
        }
        fputs("'\n", f);
    }
    for (size_t i = 0; i < n_t; i++) {
        if (t[i].has_subs) {
            fprintf(f,
                    "complete -c vmctl -n '__fish_seen_subcommand_from %s; and not "
                    "__fish_seen_subcommand_from ",
                    t[i].path);
            print_subs(f, t[i].cmd);
            fputs("' -a '", f);
            print_subs(f, t[i].cmd);
            fputs("'\n", f);
        }
        copt o[MAX_OPTS];
        size_t n = help_options(t[i].cmd->help ? t[i].cmd->help : "", o, MAX_OPTS);
        for (size_t k = 0; k < n; k++) {
            if (streq(o[k].name, "-h") || streq(o[k].name, "--help"))
                continue;
            fputs("complete -c vmctl -n '", f);
            fish_condition(f, &t[i]);
            if (o[k].name[1] == '-')
                fprintf(f, "' -l %s%s\n", o[k].name + 2, o[k].value ? " -r -F" : "");
            else
                fprintf(f, "' -s %s%s\n", o[k].name + 1, o[k].value ? " -r -F" : "");
        }
        const char *args = NULL;
        if (takes_vm_name(t[i].cmd, t[i].path))
            args = "(vmctl list -q 2>/dev/null)";
        else if (streq(t[i].path, "errors"))
            args = NULL; /* below */
        else if (streq(t[i].path, "completion"))
            args = "bash zsh fish";
        if (args) {
            fputs("complete -c vmctl -n '", f);
            fish_condition(f, &t[i]);
            fprintf(f, "' -a '%s'\n", args);
        }
        if (streq(t[i].path, "errors")) {
            fputs("complete -c vmctl -n '__fish_seen_subcommand_from errors' -a '", f);
            print_codes(f);
            fputs("'\n", f);
        }
        if (streq(t[i].path, "help")) {
            fputs("complete -c vmctl -n '__fish_seen_subcommand_from help' -a '", f);
            print_commands(f);
            fputs("'\n", f);
        }
        /* commands that name files: cp, create --cloud-init, kdl fmt, image import, up --file */
        if (streq(t[i].path, "cp") || streq(t[i].path, "kdl fmt") ||
            streq(t[i].path, "image import") || streq(t[i].path, "image inspect")) {
            fputs("complete -c vmctl -n '", f);
            fish_condition(f, &t[i]);
            fputs("' -F\n", f);
        }
    }
}

int cmd_completion(cli *c, int argc, char **argv)
{
    int r;
    if (!cli_parse_no_options(c, argc, argv, 1, 1, "SHELL (bash, zsh or fish)", &r))
        return r;
    const char *sh = c->args[0];
    if (!streq(sh, "bash") && !streq(sh, "zsh") && !streq(sh, "fish"))
        return cli_invalid_value(c, "SHELL", sh, "bash, zsh or fish");
    if (c->json)
        return cli_usage_error(c, "`vmctl completion` prints a script; --json does not apply");
    target t[128];
    size_t n = targets(t, ELEMENTSOF(t));
    if (streq(sh, "bash"))
        print_bash(stdout, t, n);
    else if (streq(sh, "zsh"))
        print_zsh(stdout, t, n);
    else
        print_fish(stdout, t, n);
    return EXIT_OK; /* a failed write is reported at exit */
}
