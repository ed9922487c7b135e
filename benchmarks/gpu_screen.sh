#!/usr/bin/env bash
# Screen world-model recipes on one GPU in a few minutes: collect, train several
# configs at once, evaluate each on the same 100 held-out scenes.
#
#   benchmarks/gpu_screen.sh OUT_DIR [EXTRA_STORE ...]
#
# 1. COLLECT_WORKERS processes each walk their own scenes (random walker, frame
#    skip 4, as online training does) for COLLECT_S seconds into their own store.
# 2. Every run in RUNS trains at once on the GPU, offline from all the stores
#    (EXTRA_STORE too), for at most TRAIN_MIN minutes or its step count.
#    One GQN of the cpu preset leaves an H100 mostly idle (a step is ~900 small
#    operations, launch-bound), so several runs share it.
# 3. Each run, and the bundled model, is evaluated on 100 held-out scenes.
#
# A run is "name steps anneal_steps [FIELD=VALUE ...]". The default runs replay the
# CPU hour's step counts: 12371 steps is what two single-threaded ranks reach in 60
# minutes on 2 cores (README), and the variants get the steps their measured CPU
# speed-up would buy in the same hour (hidden 48: 1.44x, L=4: 1.31x).
set -u
out=${1:?usage: gpu_screen.sh OUT_DIR [EXTRA_STORE ...]}
shift
extra_stores=("$@")
DEVICE=${DEVICE:-cuda}
COLLECT_WORKERS=${COLLECT_WORKERS:-12}
COLLECT_S=${COLLECT_S:-90}
TRAIN_MIN=${TRAIN_MIN:-5}
EVAL_SCENES=${EVAL_SCENES:-100}
PRESET=${PRESET:-cpu}
RUNS=${RUNS:-"base 12371 6000
h48 17800 8900 hidden_channels=48
L4 16200 8100 num_layers=4
base2x 24742 12000"}
shopt -s nullglob
cli="python3 -m gqn_env.cli"
mkdir -p "$out"
t0=$(date +%s)
say() { echo "[$(($(date +%s) - t0))s] $*"; }

say "collecting: $COLLECT_WORKERS workers x ${COLLECT_S}s"
for i in $(seq 1 "$COLLECT_WORKERS"); do
    timeout -s INT -k 10 "$COLLECT_S" $cli collect --out "$out/walk$i.gqnstore" --scenes 100000 --seed $((500 + i)) \
        >"$out/collect$i.log" 2>&1 &
done
wait
stores=("$out"/walk*.gqnstore "${extra_stores[@]}")
say "stores: $(du -ch "${stores[@]}" | tail -1)"

say "training (at most $TRAIN_MIN min each)"
while read -r name steps anneal sets; do
    [ -z "$name" ] && continue
    set_args=()
    [ -n "$sets" ] && set_args=(--set $sets)
    $cli train --preset "$PRESET" --device "$DEVICE" --store "${stores[@]}" --offline --max-scenes 100000 \
        --checkpoint "$out/$name.pt" --steps "$steps" --anneal-steps "$anneal" --minutes "$TRAIN_MIN" \
        --checkpoint-every 60 --no-progress "${set_args[@]}" >"$out/train_$name.log" 2>&1 &
done <<<"$RUNS"
wait
say "trained"

say "evaluating on $EVAL_SCENES held-out scenes"
$cli evaluate --no-progress --device "$DEVICE" --scenes "$EVAL_SCENES" --out "$out/eval_bundled.json" >"$out/eval_bundled.log" 2>&1 &
while read -r name _; do
    [ -z "$name" ] && continue
    $cli evaluate --no-progress --checkpoint "$out/$name.pt" --device "$DEVICE" --scenes "$EVAL_SCENES" \
        --out "$out/eval_$name.json" >"$out/eval_$name.log" 2>&1 &
done <<<"$RUNS"
wait
say "done"
for f in "$out"/train_*.log; do
    echo "== $f"
    grep -E '"(steps|seconds|train_seconds|scenes_collected)"' "$f" || tail -5 "$f"
done
for f in "$out"/eval_*.log; do
    echo "== $f"
    cat "$f"
done
