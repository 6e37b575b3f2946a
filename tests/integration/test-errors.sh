#!/bin/bash
# Errors that show their cause (issue 10): real failing commands whose cause is a system error
# (a --home that cannot be made, an image file that is missing, a directory, a symlink loop, a
# VMFile naming a missing image, `kdl fmt` of a directory). For each: the text says the cause once,
# as the last thing before the help ("caused by: Is a directory (EISDIR)"), and the message does
# not paste it; --json carries errno (a number), errno_name and cause. Needs no guest.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "jq is not installed"

setup_home
tmp=$(mktemp -d /tmp/vmctl-errors-tmp.XXXXXX)
trap 'cleanup; rm -rf "$tmp"' EXIT

mkdir "$tmp/dir"
: >"$tmp/file"
ln -s "$tmp/loop" "$tmp/loop"
mkdir "$tmp/project"
printf 'vm "x" {\n    image "./nope.qcow2"\n}\n' >"$tmp/project/VMFile.kdl"

# cause WHAT NAMES DIR ARGS...: run vmctl ARGS in DIR, text and --json; NAMES is the errno names
# allowed (a|b: what the host says may depend on who runs it)
cause() {
  local what=$1 names=$2 dir=$3
  shift 3
  local err rc json name text
  err=$(cd "$dir" && "$VMCTL" "$@" 2>&1 >/dev/null)
  rc=$?
  json=$(cd "$dir" && "$VMCTL" --json "$@" 2>/dev/null)
  [ "$rc" -eq 1 ] || { fail "$what: exit $rc, expected 1: $err"; return; }

  name=$(jq -r '.error.errno_name // empty' <<<"$json")
  [[ "$name" =~ ^($names)$ ]] || { fail "$what: --json errno_name '$name', expected $names: $json"; return; }
  expect_eq "$what: --json errno is a number" "$(jq -r '.error.errno | type' <<<"$json")" number
  text=$(jq -r '.error.cause' <<<"$json")
  expect_eq "$what: --json cause ends in the name" "${text##* }" "($name)"
  text=${text% (*}

  # the text: the cause once, last but for the help; the message does not say it itself
  expect_eq "$what: one caused-by line" "$(grep -c 'caused by:' <<<"$err")" 1
  expect_eq "$what: the cause is the last line before the help" \
    "$(sed '/^  help:/,$d' <<<"$err" | grep -v '^$' | tail -n 1)" "  caused by: $text ($name)"
  if grep -F -q -i "$text" <<<"$(jq -r '.error.message' <<<"$json")"; then
    fail "$what: the message pastes the cause: $(jq -r .error.message <<<"$json")"
  else
    ok "$what: the message does not paste the cause"
  fi
}

cause "--home that cannot be made" 'EPERM|EACCES|EROFS' "$tmp" --home /sys/x create a
cause "--home under a file" ENOTDIR "$tmp" --home "$tmp/file/home" create a
cause "--home under /etc/passwd" ENOTDIR "$tmp" --home /etc/passwd/x list
cause "image import of a missing file" ENOENT "$tmp" image import "$tmp/missing.qcow2" --name m
cause "image import of a directory" EISDIR "$tmp" image import "$tmp/dir" --name d
cause "image import of a symlink loop" ELOOP "$tmp" image import "$tmp/loop" --name l
cause "create --image a directory" EISDIR "$tmp" create a --image "$tmp/dir"
cause "kdl fmt of a directory" EISDIR "$tmp" kdl fmt "$tmp/dir"
cause "VMFile naming a missing image" ENOENT "$tmp/project" up
if [ "$(id -u)" -ne 0 ]; then
  cp "$tmp/file" "$tmp/unreadable.qcow2" && chmod 000 "$tmp/unreadable.qcow2"
  cause "image import of an unreadable file" EACCES "$tmp" image import "$tmp/unreadable.qcow2" --name u
else
  echo "note: running as root, which reads a mode-000 file: the symlink loop stands for an unreadable image"
fi

# a cause that is a placeholder is not shown (bad input: EINVAL), but --json keeps the errno
err=$("$VMCTL" create -bad 2>&1 >/dev/null)
grep -q 'caused by:' <<<"$err" && fail "a usage error shows a cause: $err" || ok "bad input shows no cause"
expect_eq "bad input --json: errno_name" "$("$VMCTL" --json create -bad 2>/dev/null | jq -r .error.errno_name)" EINVAL

finish
