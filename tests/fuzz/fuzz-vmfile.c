/* SPDX-License-Identifier: MIT */
/* libFuzzer target for VMFile.kdl validation (src/lib/vmfile.c) on top of the KDL parser. For
 * every input, a failure is vmfile::parse_failed or vmfile::validation, positioned: its message
 * starts with "fuzz.kdl:LINE:COLUMN: " matching its details, with the snippet as its note; a
 * success is a list of machines whose configs satisfy the schema's invariants.
 *
 * tests/fuzz/run.sh builds and runs it; its corpus (tests/fuzz/corpus/fuzz-vmfile) holds the
 * VMFiles of docs/vmfile.md and the tests. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "util/util.h"
#include "vmfile.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-vmfile: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmfile *f = NULL;
    vmctl_error *e = NULL;
    int r = vmfile_parse("fuzz.kdl", "/nonexistent-fuzz-dir", (const char *)data, size, &f, &e);
    if (r < 0) {
        CHECK(!f);
        CHECK(e);
        vmctl_error_kind k = vmctl_error_get_kind(e);
        if (k == VMCTL_E_INTERNAL) { /* out of memory only */
            vmctl_error_free(e);
            return 0;
        }
        CHECK(k == VMCTL_E_VMFILE_PARSE_FAILED || k == VMCTL_E_VMFILE_VALIDATION);
        if (size > VMFILE_MAX_BYTES) { /* refused before parsing: no position */
            CHECK(k == VMCTL_E_VMFILE_PARSE_FAILED && vmctl_error_find_detail(e, "limit"));
            vmctl_error_free(e);
            return 0;
        }
        const char *line = vmctl_error_find_detail(e, "line");
        const char *col = vmctl_error_find_detail(e, "column");
        CHECK(line && col);
        char *prefix = str_printf("fuzz.kdl:%s:%s: ", line, col);
        CHECK(prefix && str_startswith(vmctl_error_get_message(e), prefix));
        free(prefix);
        CHECK(vmctl_error_get_n_notes(e) >= 1);
        if (k == VMCTL_E_VMFILE_VALIDATION)
            CHECK(vmctl_error_find_detail(e, "node"));
        vmctl_error_free(e);
        return 0;
    }
    CHECK(f && !e && f->n_machines > 0 && f->n_machines <= VMFILE_MAX_MACHINES);
    for (size_t i = 0; i < f->n_machines; i++) {
        const vmfile_machine *m = &f->machines[i];
        CHECK(name_is_valid(m->config.name));
        CHECK(m->config.memory_mib == 0 || m->config.memory_mib >= 32);
        CHECK(m->config.vcpus <= 255);
        CHECK(!(m->config.image && m->config.kernel));
        CHECK(!m->config.initrd || m->config.kernel);
        CHECK((m->config.env == NULL) == (m->n_env == 0));
        CHECK(m->n_steps <= VMFILE_MAX_STEPS && m->config.n_ports <= VMFILE_MAX_PORTS &&
              m->n_env <= VMFILE_MAX_ENV);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(f->machines[j].name, m->name) != 0);
        for (size_t j = 0; j < m->n_steps; j++) {
            const vmfile_step *s = &m->steps[j];
            CHECK(s->line >= 1 && (j == 0 || s->line >= m->steps[j - 1].line));
            if (s->kind == VMFILE_STEP_SHELL)
                CHECK(!s->inline_cmd != !s->script);
            else
                CHECK(s->source && s->destination && s->destination[0] == '/');
        }
    }
    vmfile_free(f);
    return 0;
}
