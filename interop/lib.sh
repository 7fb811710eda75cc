# Shell helpers shared by the interop suites and the benchmark scripts. Source it:
#   . "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/interop/lib.sh"

# A port free for both TCP and UDP on 127.0.0.1 (xferd serves h1/h2 and h3 on one port).
free_port() {
    "${PY:-python3}" - <<'PYEOF'
import socket, sys
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close(); u.close(); continue
    t.close(); u.close()
    print(port); sys.exit(0)
sys.exit(1)
PYEOF
}

CLK_TCK=$(getconf CLK_TCK)
# pid -> utime+stime in clock ticks (0 when the process is gone).
cpu_ticks() {
    local f
    if read -r -a f <"/proc/$1/stat" 2>/dev/null; then echo $((f[13] + f[14])); else echo 0; fi
}

# Stops a background process: TERM, up to 5 s, then KILL; reaps it. No-op for "".
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
