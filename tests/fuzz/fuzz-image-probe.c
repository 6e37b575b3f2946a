/* SPDX-License-Identifier: MIT */
/* libFuzzer target for disk image format detection (src/lib/image-probe.c): the input is the
 * first bytes of a file, probed once as the whole file and once as the head of a longer one.
 * Checks that a successful probe names a format and that a qcow2 backing file lies inside the
 * input. Corpus: heads of real images made by qemu-img create -f FMT and of our seed ISOs.
 * Built and run by tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image-format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint64_t sizes[] = {size, (uint64_t)size * 4 + 65536};
    for (int i = 0; i < 2; i++) {
        image_probe p;
        const char *why = NULL;
        int r = image_probe_buffer(data, size, sizes[i], &p, &why);
        if (r == 0) {
            if (!p.format[0])
                abort();
            if (p.backing_file && strlen(p.backing_file) > size)
                abort();
        } else if (!why) {
            abort();
        }
        image_probe_clear(&p);
    }
    return 0;
}
