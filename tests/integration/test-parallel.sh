#!/bin/bash
# 8 creates in parallel: distinct names all succeed; the same name succeeds exactly once.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home

pids=()
for i in $(seq 8); do "$VMCTL" --json create "p$i" >"$VMCTL_HOME/out.$i" 2>&1 & pids+=($!); done
ok_count=0
for i in $(seq 8); do wait "${pids[$((i-1))]}" && ok_count=$((ok_count + 1)); done
expect_eq "8 distinct creates succeed" "$ok_count" 8
expect_eq "8 vms listed" "$(vm list --json | jq '[.[].name] | unique | length')" 8

pids=()
for i in $(seq 8); do "$VMCTL" --json create same >"$VMCTL_HOME/same.$i" 2>/dev/null & pids+=($!); done
ok_count=0 exists=0
for i in $(seq 8); do
  if wait "${pids[$((i-1))]}"; then ok_count=$((ok_count + 1))
  elif [ "$(jq -r .error.code "$VMCTL_HOME/same.$i")" == vm_manager::vm::already_exists ]; then exists=$((exists + 1))
  else fail "same-name create $i: $(cat "$VMCTL_HOME/same.$i")"; fi
done
expect_eq "same name: one success" "$ok_count" 1
expect_eq "same name: 7 already_exists" "$exists" 7
expect_eq "9 vms in total" "$(vm list --json | jq length)" 9
finish
