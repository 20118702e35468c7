#!/bin/sh
# The same chain as examples/Makefile, with pipes: each stage reads the previous one's file on stdin.
# Usage: sh examples/pipeline.sh [OUTDIR]     (needs `cxdi` on PATH)
set -eu
out=${1:-pipeline-out}
mkdir -p "$out"
cxdi simulate tungsten -o "$out/sim" --seed 0 -q
# preprocess writes the pattern to stdout, mask reads it from stdin: no intermediate file
cxdi preprocess "$out/sim/frames.h5" --energy 8 --distance 5 --pixel 75e-6 -o - -q \
  | cxdi mask - -o "$out/data.cxi" -q
# several random starts in parallel, one process each, then the average of the best
for seed in 1 2 3 4; do
  cxdi phase "$out/data.cxi" -o "$out/run$seed.cxi" --runs 1 --seed "$seed" --threads 1 -q &
done
wait
cxdi average "$out"/run*.cxi --best 3 -o "$out/avg.cxi" -q
cxdi resolve-prt "$out/avg.cxi" --data "$out/data.cxi" --json > "$out/prtf.json"
cxdi show "$out/avg.cxi" -o "$out/avg.png" -q
echo "image: $out/avg.png   resolution report: $out/prtf.json"
