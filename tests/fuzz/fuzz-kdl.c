/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the KDL parser and printer. For every input, in each version mode:
 *  - a failure is a vm_manager::vmfile::parse_failed whose message starts with
 *    "fuzz.kdl:LINE:COLUMN: " matching its details, with the snippet as its note;
 *  - a success prints a canonical form that parses again as KDL v2 and prints identically (the
 *    canonical form is valid KDL and its own fixed point);
 * and snippets at arbitrary offsets never read outside the buffer.
 *
 * tests/fuzz/run.sh builds and runs it; its corpus (tests/fuzz/corpus/fuzz-kdl) is the
 * conformance suite's input directory, tests/kdl/input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kdl.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-kdl: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_error(const vmctl_error *e)
{
    CHECK(e);
    if (vmctl_error_get_kind(e) == VMCTL_E_INTERNAL)
        return; /* out of memory */
    CHECK(vmctl_error_get_kind(e) == VMCTL_E_VMFILE_PARSE_FAILED);
    const char *line = vmctl_error_find_detail(e, "line");
    const char *col = vmctl_error_find_detail(e, "column");
    CHECK(line && col && atoi(line) >= 1 && atoi(col) >= 1);
    char prefix[96];
    snprintf(prefix, sizeof(prefix), "fuzz.kdl:%s:%s: ", line, col);
    CHECK(strncmp(vmctl_error_get_message(e), prefix, strlen(prefix)) == 0);
    CHECK(vmctl_error_get_n_notes(e) == 1);
    CHECK(strstr(vmctl_error_get_note(e, 0), "^"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int modes[] = {KDL_VERSION_MARKER, KDL_VERSION_1, KDL_VERSION_FALLBACK};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        kdl_document *doc = NULL;
        vmctl_error *e = NULL;
        int r = kdl_parse("fuzz.kdl", (const char *)data, size, modes[m], &doc, &e);
        if (r < 0) {
            CHECK(!doc);
            check_error(e);
            vmctl_error_free(e);
            continue;
        }
        CHECK(doc && !e);
        char *out = NULL;
        size_t len = 0;
        if (kdl_format(doc, &out, &len) == 0) {
            CHECK(len == strlen(out) && len > 0 && out[len - 1] == '\n');
            kdl_document *again = NULL;
            r = kdl_parse("canonical.kdl", out, len, KDL_VERSION_2, &again, &e);
            if (r < 0 && vmctl_error_get_kind(e) != VMCTL_E_INTERNAL) {
                fprintf(stderr, "canonical output does not parse: %s\n%s\n",
                        vmctl_error_get_message(e), out);
                abort();
            }
            if (again) {
                char *out2 = NULL;
                if (kdl_format(again, &out2, NULL) == 0) {
                    if (strcmp(out, out2) != 0) {
                        fprintf(stderr, "not a fixed point:\n%s---\n%s", out, out2);
                        abort();
                    }
                    free(out2);
                }
                kdl_document_free(again);
            }
            vmctl_error_free(e);
            free(out);
        }
        /* position diagnostics for the first top-level nodes (each scans from the start) */
        for (size_t i = 0; i < doc->n_nodes && i < 16; i++) {
            vmctl_error *v = NULL;
            kdl_error_at(doc, &v, VMCTL_E_VMFILE_VALIDATION, doc->nodes[i].offset, "here", "n%zu",
                         i);
            CHECK(v && vmctl_error_get_n_notes(v) == 1);
            vmctl_error_free(v);
        }
        kdl_document_free(doc);
    }
    /* snippets anywhere, including inside UTF-8 sequences and past the end */
    for (size_t off = 0; off <= size + 1; off += size / 7 + 1) {
        char *s = kdl_snippet("fuzz.kdl", (const char *)data, size, off, "label");
        free(s);
    }
    return 0;
}
