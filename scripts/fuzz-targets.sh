# Sourced by fuzz-smoke.sh and fuzz-long.sh: libFuzzer options per fuzz target.
# dataplane_ops decodes operations until its input ends; 256 bytes are 5 to 20 operations,
# enough for hold -> release sequences, and keep it fast (a longer input is a longer run).
# control_ops reads at most 64 operations of at most 7 bytes: 512 bytes hold the longest.
fuzz_target_args() {
    case "$1" in
        dataplane_ops) echo "-max_len=256" ;;
        control_ops) echo "-max_len=512" ;;
        *) echo "" ;;
    esac
}
