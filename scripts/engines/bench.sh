#!/usr/bin/env bash
# The executors and tracking-store figures of docs/performance.md, on real engines, in one command:
#
#   sudo unshare --net scripts/engines/bench.sh [STATE_DIR]
#
# Inside a private network namespace (loopback only: Ray binds every interface) it brings up a
# one-node SLURM cluster and PostgreSQL (scripts/engines/*.sh) and `harness server` on it, times
# `harness run toy2d --profile smoke` on the slurm and ray executors, runs
# benchmarks/executors.py (processes, slurm, ray) and benchmarks/writers.py (the server on
# PostgreSQL, and SQLite written directly), and stops every daemon by its PID on the way out.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
state=${1:-$(mktemp -d /tmp/harness-bench-XXXXXX)}
mkdir -p "$state/work"; chmod 755 "$state"
ip link set lo up && ip addr add 127.0.0.2/8 dev lo 2>/dev/null
server=""
cleanup() {
    if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null; wait "$server"; fi
    bash "$root/scripts/engines/slurm.sh" down "$state/slurm"
    bash "$root/scripts/engines/postgres.sh" down "$state/pg"
}
trap cleanup EXIT
seconds() { python -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }

t=$(date +%s.%N); bash "$root/scripts/engines/slurm.sh" up "$state/slurm" >/dev/null || exit 1
echo "slurm cluster up: $(seconds "$t") s"
t=$(date +%s.%N); bash "$root/scripts/engines/postgres.sh" up "$state/pg" 5432 >/dev/null || exit 1
echo "postgresql up: $(seconds "$t") s"
source "$state/slurm/env"; source "$state/pg/env"
cd "$state/work" || exit 1
t=$(date +%s.%N)
harness server --backend-store-uri "$HARNESS_POSTGRES_URI" --artifacts-destination "$state/artifacts" \
    >"$state/server.log" 2>&1 &
server=$!
until curl -sf http://127.0.0.1:5000/health >/dev/null; do sleep 0.5; done
echo "harness server up: $(seconds "$t") s"
export OMP_NUM_THREADS=1
for executor in slurm ray; do
    t=$(date +%s.%N)
    harness run toy2d --profile smoke --executor "$executor" --tracking-uri http://127.0.0.1:5000 \
        --no-progress >"$state/run-$executor.log" 2>&1
    rc=$?
    echo "harness run toy2d --profile smoke --executor $executor: $(seconds "$t") s, exit $rc"
done
python "$root/benchmarks/executors.py" --executor processes:jobs=2 --executor slurm:poll=1 --executor ray \
    --tracking-uri http://127.0.0.1:5000 2>/dev/null | grep -v '^\['
python "$root/benchmarks/writers.py" --tracking-uri http://127.0.0.1:5000 \
    --tracking-uri "sqlite:///$state/work/writers.db" 2>/dev/null | grep -v '^\['
