#!/bin/sh
# One-shot 'init' service of the compose deployment (run as root in the bridge image): give the
# named volumes to the users the services run as, before they start. Docker creates a named
# volume root-owned unless the image has the directory; the broker-auth volume is shared by two
# images, so neither decides its owner.
#
#   init-volumes.sh AUTH_DIR DATA_DIR
#
#   AUTH_DIR  broker password and ACL files: passby (10001) writes them, group mosquitto (1883)
#             reads them: 10001:1883, 2750 (setgid, so new files stay group 1883), files 0640
#   DATA_DIR  the bridge's data and keys: 10001:10001, 0750
set -eu
BRIDGE_UID=10001
MOSQUITTO_GID=1883
auth="${1:?AUTH_DIR}"
data="${2:?DATA_DIR}"
mkdir -p "$auth" "$data"
chown "$BRIDGE_UID:$MOSQUITTO_GID" "$auth"
chmod 2750 "$auth"
for f in "$auth"/passby.passwd "$auth"/passby.acl; do
  [ -e "$f" ] || continue
  chown "$BRIDGE_UID:$MOSQUITTO_GID" "$f"
  chmod 0640 "$f"
done
chown -R "$BRIDGE_UID:$BRIDGE_UID" "$data"
chmod 0750 "$data"
echo "init-volumes: $auth is $BRIDGE_UID:$MOSQUITTO_GID 2750, $data is $BRIDGE_UID 0750"
