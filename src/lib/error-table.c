/* SPDX-License-Identifier: MIT */
/* The error catalogue: one row per code. docs/errors.md mirrors it; test-error keeps them in step.
 */
#include <errno.h>
#include <string.h>

#include "error.h"

#define ROW(k, c, t, h) [k] = {k, c, t, h}

static const vmctl_error_info catalogue[_VMCTL_E_MAX] = {
    ROW(VMCTL_E_QEMU_SPAWN_FAILED, "vm_manager::qemu::spawn_failed", "QEMU process failed to start",
        "Ensure `qemu-system-x86_64` is installed, in PATH, and KVM is available (`/dev/kvm`)"),
    ROW(VMCTL_E_QEMU_QMP_CONNECT_FAILED, "vm_manager::qemu::qmp_connect_failed",
        "Can't connect to QMP socket",
        "QEMU may have exited before its QMP socket was ready; `vmctl logs NAME --qemu` shows "
        "QEMU's own error"),
    ROW(VMCTL_E_QEMU_QMP_COMMAND_FAILED, "vm_manager::qemu::qmp_command_failed",
        "QMP command returned an error",
        "QEMU refused the command; the note carries QEMU's own description of why"),
    ROW(VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED, "vm_manager::image::overlay_creation_failed",
        "QCOW2 overlay creation failed",
        "Ensure `qemu-img` is installed and base image exists and is readable"),
    ROW(VMCTL_E_NETWORK_IP_DISCOVERY_TIMEOUT, "vm_manager::network::ip_discovery_timeout",
        "Guest IP not found",
        "The VM has no address vmctl can reach: create it with `--net user` (SSH then goes through "
        "its forwarded port), or use the agent with `vmctl exec`"),
    ROW(VMCTL_E_PROPOLIS_UNREACHABLE, "vm_manager::propolis::unreachable",
        "Can't reach propolis-server",
        "Ensure propolis-server is running and listening on expected address"),
    ROW(VMCTL_E_CLOUDINIT_ISO_FAILED, "vm_manager::cloudinit::iso_failed",
        "Seed ISO generation failed",
        "Check that the VM directory named in the message is writable and its disk has free "
        "space; vmctl writes the seed ISO itself (no genisoimage needed)"),
    ROW(VMCTL_E_SSH_FAILED, "vm_manager::ssh::failed", "SSH connection or command failed",
        "Check SSH key, guest reachability, and sshd running"),
    ROW(VMCTL_E_SSH_KEYGEN_FAILED, "vm_manager::ssh::keygen_failed",
        "Ed25519 key generation failed", "Internal error; please report it"),
    ROW(VMCTL_E_IMAGE_DOWNLOAD_FAILED, "vm_manager::image::download_failed",
        "Image download failed", "Check network connectivity and URL correctness"),
    ROW(VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED, "vm_manager::image::format_detection_failed",
        "Can't detect image format", "Ensure `qemu-img` installed and file is valid disk image"),
    ROW(VMCTL_E_IMAGE_CONVERSION_FAILED, "vm_manager::image::conversion_failed",
        "Image format conversion failed", "Ensure `qemu-img` installed and sufficient disk space"),
    ROW(VMCTL_E_VM_NOT_FOUND, "vm_manager::vm::not_found", "VM not in store",
        "Run `vmctl list` to see available VMs"),
    ROW(VMCTL_E_VM_INVALID_STATE, "vm_manager::vm::invalid_state",
        "Operation invalid for current state",
        "Run `vmctl status NAME` to see the VM's state; the details name the state it is in and "
        "the one that was asked for"),
    ROW(VMCTL_E_BACKEND_NOT_AVAILABLE, "vm_manager::backend::not_available",
        "Backend not supported on platform",
        "Use the QEMU backend (`--backend qemu`, the default); `vmctl doctor` shows what this host "
        "has"),
    ROW(VMCTL_E_VMFILE_NOT_FOUND, "vm_manager::vmfile::not_found", "VMFile.kdl not found",
        "Create VMFile.kdl in current directory or specify path with `--file`"),
    ROW(VMCTL_E_VMFILE_PARSE_FAILED, "vm_manager::vmfile::parse_failed", "KDL syntax error",
        "Check VMFile.kdl syntax; see https://kdl.dev"),
    ROW(VMCTL_E_VMFILE_VALIDATION, "vm_manager::vmfile::validation", "VMFile validation error",
        "Fix the node and field named in the message; docs/vmfile.md lists what is allowed"),
    ROW(VMCTL_E_PROVISION_FAILED, "vm_manager::provision::failed", "Provisioner step failed",
        "Read the step's output with `vmctl logs NAME --provision`, fix the step in VMFile.kdl "
        "and run `vmctl provision` again"),
    ROW(VMCTL_E_IO, "vm_manager::io", "General I/O error",
        "Check the path named in the message: it must exist, be readable, and its disk must have "
        "free space"),
    ROW(VMCTL_E_VM_ALREADY_EXISTS, "vm_manager::vm::already_exists",
        "Create with a name that is already in the store",
        "Choose another name, or remove the old VM first with `vmctl destroy NAME`"),
    ROW(VMCTL_E_SNAPSHOT_ALREADY_EXISTS, "vm_manager::snapshot::already_exists",
        "Snapshot name already used for this VM",
        "Choose another snapshot name; `vmctl snapshot list NAME` shows the ones in use"),
    ROW(VMCTL_E_SNAPSHOT_NOT_FOUND, "vm_manager::snapshot::not_found",
        "Snapshot does not exist for this VM",
        "Check the snapshot's name with `vmctl snapshot list NAME`"),
    ROW(VMCTL_E_STORE_LOCKED, "vm_manager::store::locked", "Store busy beyond the lock timeout",
        "Another vmctl holds the store; retry, or look for a stuck vmctl process"),
    ROW(VMCTL_E_STORE_CORRUPT, "vm_manager::store::corrupt",
        "Store database or VM directory inconsistent or unreadable",
        "Run `vmctl doctor`; if the database itself is damaged, restore $VMCTL_HOME/vmctl.db from "
        "a backup, or move it aside and run `vmctl doctor --fix` to adopt the VMs under vms/ into "
        "a new store"),
    ROW(VMCTL_E_METRICS_FAILED, "vm_manager::metrics::failed", "Reading VM statistics failed",
        "Check that the VM is running with `vmctl status NAME`"),
    ROW(VMCTL_E_VM_SHUTDOWN_FAILED, "vm_manager::vm::shutdown_failed",
        "Graceful shutdown or its escalation failed",
        "Retry with `vmctl stop NAME --force` or `vmctl kill NAME`"),
    ROW(VMCTL_E_NETWORK_FIREWALL_FAILED, "vm_manager::network::firewall_failed",
        "Host firewall rule setup or teardown failed",
        "Ensure libnftables1 is installed and vmctl runs as root or with CAP_NET_ADMIN; the note "
        "carries netfilter's own message"),
    ROW(VMCTL_E_NETWORK_CONFIG_INVALID, "vm_manager::network::config_invalid",
        "Network configuration malformed (CIDR, port, mode)",
        "Fix the network option named in the message; see `vmctl create --help`"),
    ROW(VMCTL_E_NETWORK_SETUP_FAILED, "vm_manager::network::setup_failed",
        "Host network setup (TAP, bridge, forward) failed",
        "Ensure vmctl runs with CAP_NET_ADMIN and /dev/net/tun exists, or use `--net user`"),
    ROW(VMCTL_E_JAILER_FAILED, "vm_manager::jailer::failed",
        "Jail (chroot, namespaces, cgroup) preparation or teardown failed",
        "The `step` detail names what failed; `vmctl doctor` shows what the jail needs on this "
        "host, and `vmctl create --no-jail` runs a VM unconfined"),
    ROW(VMCTL_E_IMAGE_ROOTFS_FAILED, "vm_manager::image::rootfs_failed",
        "Root filesystem template missing, clone failed or stamp mismatch",
        "Re-import the image with `vmctl image import PATH` or rebuild it"),
    ROW(VMCTL_E_IMAGE_CHECKSUM_MISMATCH, "vm_manager::image::checksum_mismatch",
        "Downloaded or cached file does not match its SHA-256",
        "Check the `--sha256` value against the publisher's checksum and pull again"),
    ROW(VMCTL_E_SNAPSHOT_UFFD_FAILED, "vm_manager::snapshot::uffd_failed",
        "Userfaultfd page-fault handler failed",
        "Ensure the kernel allows userfaultfd (vm.unprivileged_userfaultfd or root)"),
    ROW(VMCTL_E_AGENT_FAILED, "vm_manager::agent::failed",
        "Guest agent protocol or guest-side failure",
        "Check the guest's console with `vmctl logs NAME`; the note carries the agent's message"),
    ROW(VMCTL_E_CONFIG_INVALID, "vm_manager::config::invalid",
        "Input validation failed (names, sizes, paths, environment)",
        "Fix the field named in the message; `vmctl create --help` lists what is allowed"),
    ROW(VMCTL_E_HOST_KVM_UNAVAILABLE, "vm_manager::host::kvm_unavailable",
        "KVM asked for but not usable on this host",
        "Run `vmctl doctor` to see why, and use `--accel tcg` (or `auto`) meanwhile"),
    ROW(VMCTL_E_HOST_MISSING_DEPENDENCY, "vm_manager::host::missing_dependency",
        "A host tool or package vmctl needs is missing",
        "Install the package named in the message (`apt-get install ...`) and run `vmctl doctor`"),
    ROW(VMCTL_E_TIMEOUT, "vm_manager::timeout", "Operation exceeded its deadline",
        "Raise the timeout, or look at `vmctl logs NAME` for why the guest is slow"),
    ROW(VMCTL_E_EXEC_UNAVAILABLE, "vm_manager::exec::unavailable",
        "Command execution not possible on this VM",
        "Start the VM and wait for it with `vmctl start NAME --wait`; see the remediation detail"),
    ROW(VMCTL_E_CLI_USAGE, "vm_manager::cli::usage", "Command line not understood",
        "Run `vmctl COMMAND --help` for the options and an example"),
    ROW(VMCTL_E_INTERNAL, "vm_manager::internal", "A bug in vmctl",
        "Please report it with the output of `vmctl -v` and the command that failed"),
    ROW(VMCTL_E_CP_UNSAFE_ENTRY, "vm_manager::cp::unsafe_entry",
        "A copy out of a guest left out entries the host does not take from a guest",
        "Everything else was copied; the notes name what was left out (devices, FIFOs, links "
        "out of the tree). Fetch such things with `vmctl exec NAME -- tar -c PATH` if you need "
        "them"),
    ROW(VMCTL_E_IMAGE_NOT_FOUND, "vm_manager::image::not_found",
        "No image of that name in the cache", "Run `vmctl image list` to see the cached images"),
    ROW(VMCTL_E_IMAGE_ALREADY_EXISTS, "vm_manager::image::already_exists",
        "Import or pull under a name the cache already holds",
        "Pick another name with `--name`, or remove the old image first with `vmctl image rm "
        "NAME`"),
    ROW(VMCTL_E_IMAGE_IN_USE, "vm_manager::image::in_use",
        "Removing an image that VMs were created from",
        "Destroy those VMs first with `vmctl destroy NAME`, or remove it anyway with `vmctl image "
        "rm NAME --force`"),
    ROW(VMCTL_E_IMAGE_UNSAFE, "vm_manager::image::unsafe",
        "Image names other host files (backing file, external data file, vmdk extents)",
        "Use a self-contained image; see what it names with `vmctl image inspect PATH` and flatten "
        "it with `qemu-img convert` only if you trust those files"),
    ROW(VMCTL_E_INVALID_ARGUMENT, "vm_manager::invalid_argument",
        "A libvmctl function called with an argument it does not take (NULL context, name or "
        "result pointer, unknown flags)",
        "A bug in the program calling libvmctl: the details name the function and the check that "
        "failed; include/vmctl/*.h say what each function takes"),
    ROW(VMCTL_E_SNAPSHOT_FAILED, "vm_manager::snapshot::failed",
        "The hypervisor could not save or load a snapshot",
        "The note carries the hypervisor's own words; `vmctl logs NAME --qemu` has the rest"),
    ROW(VMCTL_E_SNAPSHOT_INCOMPATIBLE, "vm_manager::snapshot::incompatible",
        "Snapshot made by another hypervisor version or machine",
        "Restore it with the QEMU that made it (details qemu_version, machine), or boot the VM "
        "cold with `vmctl start NAME`"),
    ROW(VMCTL_E_SNAPSHOT_IN_USE, "vm_manager::snapshot::in_use",
        "Removing a snapshot that VMs still map, or whose disk layer another snapshot's layer "
        "is on",
        "Destroy the clones named in the message first with `vmctl destroy NAME`, or remove the "
        "snapshot it names first with `vmctl snapshot rm VM SNAP`"),
    ROW(VMCTL_E_API_BAD_REQUEST, "vm_manager::api::bad_request",
        "An API request was malformed (not JSON, a field of the wrong type or unknown, a missing "
        "parameter)",
        "Fix the request as the message says; docs/api.md and GET /v1/openapi.json describe every "
        "route and body"),
    ROW(VMCTL_E_API_UNAUTHORIZED, "vm_manager::api::unauthorized",
        "An API request on TCP without the right bearer token",
        "Send `Authorization: Bearer TOKEN` with the token of the file given to `vmctl serve "
        "--token-file`"),
    ROW(VMCTL_E_API_ROUTE_NOT_FOUND, "vm_manager::api::route_not_found",
        "No API route for that path (or no running command of that exec id)",
        "See the routes in docs/api.md or GET /v1/openapi.json"),
    ROW(VMCTL_E_API_METHOD_NOT_ALLOWED, "vm_manager::api::method_not_allowed",
        "The API route exists but not with that HTTP method",
        "Use one of the methods the Allow header and the details name"),
    ROW(VMCTL_E_API_TOO_LARGE, "vm_manager::api::too_large", "An API request body over its limit",
        "Send at most the size the details name (JSON bodies: 1 MiB; uploads: `vmctl serve "
        "--max-upload`)"),
    ROW(VMCTL_E_API_NOT_IMPLEMENTED, "vm_manager::api::not_implemented",
        "An API route of something vmctl does not have yet (snapshots, clones)",
        "Not available yet; docs/api.md says what each route does today"),
};

const vmctl_error_info *vmctl_error_catalogue(size_t index)
{
    if (index >= _VMCTL_E_MAX)
        return NULL;
    return &catalogue[index];
}

const vmctl_error_info *vmctl_error_lookup(const char *code)
{
    if (!code)
        return NULL;
    for (size_t i = 0; i < _VMCTL_E_MAX; i++)
        if (strcmp(catalogue[i].code, code) == 0)
            return &catalogue[i];
    return NULL;
}
