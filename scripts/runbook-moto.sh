#!/bin/sh
# Run the image bake runbook (examples/runbook/aws -provider moto) end to end against EC2
# emulated by moto (the crabbox launcher with its documented-AWS extensions)
# and real OpenSSH boxes on loopback (internal/testenv/awsbox), in one
# command. Needs root (sshd and the box user), python3 with moto[server],
# and /usr/sbin/sshd. The run is sealed in a network namespace with only
# loopback when unshare is available, so nothing can leave the machine.
#
#   scripts/runbook-moto.sh [-v] [-apply-cleanup] [...runbook flags]
set -eu
cd "$(dirname "$0")/.."
bin="$(mktemp -d)/runbook"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./examples/runbook/aws
if command -v unshare >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
	unshare --net sh -c 'ip link set lo up && exec "$0" -provider moto "$@"' "$bin" "$@"
else
	echo "runbook-moto: unshare unavailable, running unsealed (moto and sshd bind 127.0.0.1 only)" >&2
	"$bin" -provider moto "$@"
fi
