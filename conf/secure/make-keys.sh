#!/bin/sh
# Makes every key this example needs, in conf/secure/keys/ (no secret is committed):
#   sh conf/secure/make-keys.sh
# server: the cluster's pair (every daemon holds it; clients hold only server.key);
# node1, node2: the workers' pairs; admin, alice, reader: clients of three roles.
# Each public key the cluster accepts is copied into keys/authorized/ROLE/.
set -eu
cd "$(dirname "$0")"
mkdir -p keys/authorized/workers keys/authorized/admins keys/authorized/clients keys/authorized/readers
chmod 700 keys
for name in server node1 node2 admin alice reader; do
    [ -e "keys/$name.key" ] || ${FORSETICTL:-forsetictl} keygen "$name" --dir keys
done
cp keys/node1.key keys/node2.key keys/authorized/workers/
cp keys/admin.key keys/authorized/admins/
cp keys/alice.key keys/authorized/clients/
cp keys/reader.key keys/authorized/readers/
echo "keys in $(pwd)/keys"
