#!/usr/bin/env bash
# A throw-away single-node Ceph cluster (one monitor, one memstore OSD: RAM only, no disk set-up) and
# Ceph's S3 gateway (radosgw) on 127.0.0.1, for the S3-compatibility run of the transfer tests
# (make test-s3-compat). Installs nothing: it needs Debian's ceph-mon, ceph-osd, radosgw and
# ceph-common (and python3). No systemd; everything it writes is under DIR (tried as root only).
#
#   scripts/radosgw.sh start DIR   set up and start everything under DIR (created, must be empty or
#                                  absent), create the S3 user, write DIR/env and print it:
#                                    export C66_S3_SERVER=radosgw
#                                    export C66_S3_ENDPOINT=http://127.0.0.1:PORT
#                                    export C66_S3_ACCESS_KEY=... C66_S3_SECRET_KEY=...
#   scripts/radosgw.sh stop DIR    stop the daemons started there, by the PIDs they recorded
#
# The S3 user's keys are C66_S3_ACCESS_KEY / C66_S3_SECRET_KEY if set, else the tests' "testing" /
# "testing". RGW_PORT / MON_PORT choose the ports (default: free ones). START_TIMEOUT (seconds,
# default 180) bounds the wait for each step.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
ACTION=$1
DIR=$2
DAEMONS=(client.radosgw osd.0 mon.a) # stop order

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Stop the named daemons (default: all), each by the PID it recorded: TERM, then KILL after 10 s.
stop() {
    local name pid_file pid i
    (($# > 0)) || set -- "${DAEMONS[@]}"
    for name in "$@"; do
        pid_file="$DIR/run/$name.pid"
        [[ -s $pid_file ]] || continue
        pid=$(<"$pid_file")
        if kill "$pid" 2>/dev/null; then
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pid_file"
    done
}

# Run "$@" until it succeeds or START_TIMEOUT passes.
wait_for() {
    local what=$1 deadline=$((SECONDS + ${START_TIMEOUT:-180}))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "radosgw.sh: $what did not happen within ${START_TIMEOUT:-180} s; logs in $DIR/log" >&2
            tail -n 20 "$DIR"/log/*.log >&2 || true
            exit 1
        fi
        sleep 1
    done
}

start_radosgw() {
    radosgw -n client.radosgw >>"$DIR/log/startup.log" 2>&1
    wait_for "radosgw answering on port $rgw_port" python3 -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$rgw_port/', timeout=5)
except urllib.error.HTTPError:
    pass"
}

start() {
    for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
        command -v "$tool" >/dev/null || {
            echo "radosgw.sh: $tool is missing (apt-get install ceph-mon ceph-osd radosgw ceph-common)" >&2
            exit 3
        }
    done
    if [[ -e $DIR && -n $(ls -A "$DIR") ]]; then
        echo "radosgw.sh: $DIR is not empty" >&2
        exit 2
    fi
    mkdir -p "$DIR"/{run,log,mon,osd/0,rgw}
    DIR=$(cd "$DIR" && pwd)
    local fsid mon_port access secret started=$SECONDS
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    mon_port=${MON_PORT:-$(free_port)}
    rgw_port=${RGW_PORT:-$(free_port)}
    access=${C66_S3_ACCESS_KEY:-testing}
    secret=${C66_S3_SECRET_KEY:-testing}
    export CEPH_CONF=$DIR/ceph.conf
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# One OSD: pools of size 1, placement across OSDs (not hosts), few placement groups, no manager.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 8589934592
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$id
osd data = $DIR/osd/\$id
rgw data = $DIR/rgw
crash dir = $DIR/log
keyring = /dev/null
client mount timeout = 60

[client.radosgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 32
# radosgw asks for a secure monitor connection by default, which needs cephx: plain CRC without auth.
ms mon client mode = crc
EOF
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/startup.log" 2>&1
    ceph-mon -i a >>"$DIR/log/startup.log" 2>&1
    wait_for "the monitor answering" ceph --connect-timeout 5 mon stat
    local osd_uuid
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    ceph osd create "$osd_uuid" >/dev/null
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$DIR/log/startup.log" 2>&1
    ceph osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1
    ceph-osd -i 0 >>"$DIR/log/startup.log" 2>&1
    wait_for "the OSD coming up" sh -c 'ceph osd dump | grep -q "^osd.0 up"'
    # radosgw creates the default zone at its first start. The tests ask for STANDARD_IA, as AWS users
    # do, and radosgw refuses a storage class its placement target does not define (InvalidArgument):
    # define it, then restart radosgw, which reads the zone only at start.
    start_radosgw
    radosgw-admin zonegroup placement add --rgw-zonegroup=default --placement-id=default-placement \
        --storage-class=STANDARD_IA >>"$DIR/log/startup.log" 2>&1
    radosgw-admin zone placement add --rgw-zone=default --placement-id=default-placement \
        --storage-class=STANDARD_IA --data-pool=default.rgw.standard-ia.data >>"$DIR/log/startup.log" 2>&1
    stop client.radosgw
    start_radosgw
    # The user the tests sign with (radosgw checks SigV4 signatures, unlike moto).
    radosgw-admin user create --uid=c66-tests --display-name="c66 tests" \
        --access-key="$access" --secret-key="$secret" >/dev/null
    cat >"$DIR/env" <<EOF
export C66_S3_SERVER=radosgw
export C66_S3_ENDPOINT=http://127.0.0.1:$rgw_port
export C66_S3_ACCESS_KEY=$access
export C66_S3_SECRET_KEY=$secret
EOF
    cat "$DIR/env"
    echo "radosgw.sh: up in $((SECONDS - started)) s under $DIR (stop: $0 stop $DIR)" >&2
}

case $ACTION in
start)
    trap 'status=$?; ((status == 0)) || stop' EXIT # a failed start leaves nothing running
    start
    ;;
stop) stop ;;
*) usage ;;
esac
