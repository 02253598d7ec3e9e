# Sourced by fuzz-smoke.sh and fuzz-long.sh: libFuzzer options and allocator settings per fuzz
# target.
# dataplane_ops decodes operations until its input ends; 256 bytes are 5 to 20 operations,
# enough for hold -> release sequences, and keep it fast (a longer input is a longer run).
# control_ops reads at most 64 operations of at most 7 bytes: 512 bytes hold the longest.
# fence_ops reads at most 256 operations of 2 bytes.
fuzz_target_args() {
    case "$1" in
        dataplane_ops) echo "-max_len=256" ;;
        control_ops) echo "-max_len=512" ;;
        fence_ops) echo "-max_len=512" ;;
        *) echo "" ;;
    esac
}

# glibc malloc settings for the fuzz runs (not for the build), per target. By default,
# allocations up to 64 MiB come from the heap, which is never trimmed. With glibc's defaults, a
# target that allocates and frees large buffers on every input (process_batch's engines) maps,
# faults in and unmaps pages on every input: 100,000 process_batch inputs took 14 s with the
# defaults and 1.7 s with these (the other targets: the same or up to 15 % faster).
# node_config is the exception: it builds engines whose End.SBUF arenas (megabytes, zeroed)
# it never writes, and a zeroed allocation from the heap is cleared with memset where a fresh
# mapping is zero already. Allocations from 1 MiB are mapped for it: the same 30,000
# executions (-seed=7, same corpus) took 21.4 to 22.4 s of CPU against 24.5 to 24.9 with the
# 64 MiB threshold (session 47). The address sanitizer has its own allocator and ignores them.
fuzz_malloc_tunables() {
    case "$1" in
        node_config) echo "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4294967295" ;;
        *) echo "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=4294967295" ;;
    esac
}
