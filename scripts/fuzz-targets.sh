# Sourced by fuzz-smoke.sh and fuzz-long.sh: libFuzzer options per fuzz target.
# dataplane_ops decodes operations until its input ends; 256 bytes are 5 to 20 operations,
# enough for hold -> release sequences, and keep it fast (a longer input is a longer run).
fuzz_target_args() {
    case "$1" in
        dataplane_ops) echo "-max_len=256" ;;
        *) echo "" ;;
    esac
}
