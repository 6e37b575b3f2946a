/* SPDX-License-Identifier: MIT */
/* The smallest program Linux can start: no libc, no start-up code, one exit system call. Built
 * by bench/exec-bench.sh with -static -nostdlib; what an exec of it costs is the guest kernel's
 * floor for starting any process (fork/vfork, execve, exit, wait). */
void _start(void);
void _start(void)
{
    __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
    __builtin_unreachable();
}
