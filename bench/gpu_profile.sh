#!/usr/bin/env bash
# Profile the label flow on a lent GPU (shapes-demo, 128 frames at 720x1280): two timed runs,
# one under py-spy (all threads, idle included; raw stacks to $OUT/flow.txt), one with a 0.5 ms
# GIL switch interval. Needs .whl (bench/gpu_wheels.txt, py-spy included) carried along.
export PYTHONUNBUFFERED=1 PREFECT_SERVER_ANALYTICS_ENABLED=false SEGFLOW_OFFLINE=1
set -uo pipefail
date -u +%T
python3 -c "import prefect, segflow.tasks" || { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl; python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .; }
export PYTHONPATH=$PWD/bench/shims
date -u +%T
python3 - <<'EOF'
import sys; sys.path.insert(0, "bench")  # its helpers, as python bench/x.py has them
from pathlib import Path
from common import make_clip
print(make_clip(Path("/tmp/w/clips"), 3, 128, (720, 1280)), make_clip(Path("/tmp/w/clips"), 103, 4, (720, 1280)))
EOF
date -u +%T
timeout 150 python3 - <<'EOF' 2>&1 | grep -v "INFO"
import os, subprocess, time, signal, json
from segflow.cli import run_label
clip = "/tmp/w/clips/bench_s3_128f_720x1280.mp4"
run_label(["/tmp/w/clips/bench_s103_4f_720x1280.mp4"], "/tmp/w/o0", device="cuda")
for rep in (1, 2):
    t = time.perf_counter(); r = run_label([clip], f"/tmp/w/o{rep}", device="cuda"); print("flow", rep, round(time.perf_counter() - t, 2), "s", r["inputs"][0]["instances"], "rows", flush=True)
prof = subprocess.Popen(["py-spy", "record", "--pid", str(os.getpid()), "--idle", "--threads", "--rate", "250", "--format", "raw", "-o", os.environ["OUT"] + "/flow.txt"])
time.sleep(1.0)
t = time.perf_counter(); r = run_label([clip], "/tmp/w/o3", device="cuda"); print("flow profiled", round(time.perf_counter() - t, 2), "s", flush=True)
prof.send_signal(signal.SIGINT); prof.wait(timeout=30)

import sys; sys.setswitchinterval(0.0005)
t = time.perf_counter(); r = run_label([clip], "/tmp/w/o4", device="cuda"); print("flow switchinterval 0.5ms", round(time.perf_counter() - t, 2), "s", flush=True)
EOF
ls -la $OUT; date -u +%T
