#!/usr/bin/env bash
# make demo: a local broker, the fake gateways, kurir, three sample requests, then the events and rows.
# Usage: scripts/demo.sh BIN_DIR   (BIN_DIR holds the built kurir and kurir-fake-gateway)
set -euo pipefail

bin_dir=${1:?usage: demo.sh BIN_DIR}
run_dir=${DEMO_DIR:-$PWD/demo-run}
mqtt_port=${DEMO_MQTT_PORT:-18883}
rm -rf "$run_dir"
mkdir -p "$run_dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Wait until FILE contains PATTERN (at least COUNT lines), or give up after 30 s.
wait_for() {
  local file=$1 pattern=$2 count=${3:-1}
  for _ in $(seq 300); do
    if [ "$(grep -c -- "$pattern" "$file" 2>/dev/null || true)" -ge "$count" ]; then return 0; fi
    sleep 0.1
  done
  echo "demo: timed out waiting for '$pattern' in $file" >&2
  exit 1
}

say "broker: mosquitto on 127.0.0.1:$mqtt_port (persistence on, saved on every change)"
cat > "$run_dir/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
# Run as whoever runs the demo (as root, mosquitto would switch to user mosquitto).
user $(id -un)
persistence true
persistence_location $run_dir/
autosave_on_changes true
autosave_interval 1
max_queued_messages 0
max_packet_size 131072
log_dest file $run_dir/mosquitto.log
CONF
mosquitto -c "$run_dir/mosquitto.conf" & pids+=($!)

say "fake gateways: Fonnte, Wablas and Woowa dialects on loopback"
"$bin_dir/kurir-fake-gateway" --port 0 --fonnte-token demo-fonnte-token --wablas-token demo-wablas-token.secret \
  > "$run_dir/gateways.out" 2>&1 & pids+=($!)
wait_for "$run_dir/gateways.out" "listening on"
gateway=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$run_dir/gateways.out")
echo "gateways at http://$gateway"
control() { curl -fsS -X POST "http://$gateway/_control/$1" -H 'Content-Type: application/json' -d "$2" > /dev/null; }

for _ in $(seq 100); do mosquitto_pub -p "$mqtt_port" -t kurir/demo/ready -n >/dev/null 2>&1 && break; sleep 0.1; done
mosquitto_sub -p "$mqtt_port" -t 'notify/result/whatsapp/#' -v > "$run_dir/events.txt" & pids+=($!)

say "kurir: primary fonnte, backup wablas, retry after 5 s (300 s in production)"
export MQTT_URL="mqtt://127.0.0.1:$mqtt_port" MQTT_CLIENT_ID=kurir-demo
export WHATSAPP_PROVIDER=fonnte WHATSAPP_API_TOKEN=demo-fonnte-token WHATSAPP_API_URL="http://$gateway/fonnte/send"
export WHATSAPP_BACKUP_PROVIDER=wablas WHATSAPP_BACKUP_API_TOKEN=demo-wablas-token.secret
export WHATSAPP_BACKUP_API_URL="http://$gateway/wablas/api/send-message"
export WHATSAPP_TIMEOUT_SECONDS=2 WHATSAPP_RETRY_DELAY_SECONDS=5
export KURIR_DB_PATH="$run_dir/kurir.db" KURIR_DB_SYNC=normal
"$bin_dir/kurir" check
"$bin_dir/kurir" run > "$run_dir/kurir.log" 2>&1 & pids+=($!)
kurir_pid=$!
wait_for "$run_dir/kurir.log" "subscribed to"

publish() { mosquitto_pub -p "$mqtt_port" -q 1 -t "notify/whatsapp/$1" -m "$2"; }

say "scenario 1: the primary accepts"
publish tickets/assigned '{"id":"demo-1","target":"0812-3456-7890","message":"Tiket #1024 ditugaskan kepada Anda"}'
wait_for "$run_dir/events.txt" '"id":"demo-1"'

say "scenario 2: the primary answers HTTP 200 status:false (bad group id), the backup delivers"
control fonnte '{"mode":"refuse","reason":"invalid group id"}'
publish alerts/site '{"id":"demo-2","target":"120363043218123456@g.us","message":"Site Kudus down"}'
wait_for "$run_dir/events.txt" 'delivered.*"id":"demo-2"'

say "scenario 3: the primary times out, the backup's device is disconnected: retry in 5 s"
control fonnte '{"mode":"neverAnswer"}'
control wablas '{"mode":"refuse","reason":"device disconnected, need to scan qr code again"}'
publish oncall '{"id":"demo-3","target":"+62 812 1111 2222","message":"Disk full on db-1"}'
wait_for "$run_dir/events.txt" 'failed.*"id":"demo-3"'
echo "the row while it waits for its retry:"
sqlite3 -header -column "$run_dir/kurir.db" \
  "SELECT request_id, status, attempts, next_attempt_at, error_message FROM whatsapp_notifications WHERE request_id = 'demo-3'"
echo "gateways recover"
control fonnte '{"mode":"succeed"}'
control wablas '{"mode":"succeed"}'
wait_for "$run_dir/events.txt" 'delivered.*"id":"demo-3"'

kill -TERM "$kurir_pid"
wait "$kurir_pid" || true

say "kurir's operator lines"
grep -E '✅|⚠️|❌|Error:|retry' "$run_dir/kurir.log" | sed 's/^[^✅⚠❌E]*\(✅\|⚠️\|❌\|Error:\|retry\)/\1/'

say "events published on notify/result/whatsapp/#"
cat "$run_dir/events.txt"

say "whatsapp_notifications"
sqlite3 -header -column "$run_dir/kurir.db" \
  "SELECT id, request_id, route, target, provider, status, failover, attempts, error_message FROM whatsapp_notifications ORDER BY id"

say "whatsapp_attempts"
sqlite3 -header -column "$run_dir/kurir.db" \
  "SELECT notification_id, provider, outcome, error, http_status, latency_ms FROM whatsapp_attempts ORDER BY id"
echo
echo "demo files (log, database, events) are in $run_dir"
