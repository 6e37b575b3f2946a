/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the firewall's allow-list parser (fw_allow_parse in src/lib/firewall.c),
 * which takes `--allow` texts and VMFile `allow` values from users: any input is accepted or
 * refused with network::config_invalid; an accepted one is a valid entry (prefix <= 32, no host
 * bits, ports ordered, tcp/udp/both) whose canonical text fits FW_ALLOW_TEXT_MAX and parses back
 * to the same entry. Never touches netfilter. Corpus: the texts of test-firewall-parse.
 * Built by tests/fuzz/meson.build (-Dfuzz=true), run by tests/fuzz/run.sh. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "firewall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    fw_allow a;
    vmctl_error *e = NULL;
    int r = fw_allow_parse("allow", text, &a, &e);
    if (r < 0) {
        if (!e || vmctl_error_get_kind(e) != VMCTL_E_NETWORK_CONFIG_INVALID)
            abort();
        vmctl_error_free(e);
        free(text);
        return 0;
    }
    if (e || a.prefix > 32 || (a.prefix < 32 && (a.addr & (UINT32_MAX >> a.prefix))) ||
        (a.port_lo && a.port_hi < a.port_lo) || (!a.port_lo && (a.port_hi || a.proto)) ||
        (a.proto != 0 && a.proto != IPPROTO_TCP && a.proto != IPPROTO_UDP))
        abort();
    char buf[FW_ALLOW_TEXT_MAX + 8];
    memset(buf, 'x', sizeof(buf));
    fw_allow_format(&a, buf, sizeof(buf));
    if (strlen(buf) >= FW_ALLOW_TEXT_MAX)
        abort();
    fw_allow b;
    if (fw_allow_parse("allow", buf, &b, NULL) < 0 || b.addr != a.addr || b.prefix != a.prefix ||
        b.port_lo != a.port_lo || b.port_hi != a.port_hi || b.proto != a.proto)
        abort();
    free(text);
    return 0;
}
