#!/usr/bin/env bash
# Certificates for the benchmark's mTLS hop: one CA and two leaves, all ECDSA P-256.
#
#   bench/gen-certs.sh DIR
#
# Writes into DIR (created if needed):
#   ca.crt ca.key                 self-signed CA (basicConstraints CA:TRUE, 30 days)
#   client.crt client.key         leaf with URI:spiffe://cluster.local/ns/full/sa/sleep
#   server.crt server.key         leaf with URI:spiffe://cluster.local/ns/full/sa/httpbin
#                                 and DNS:httpbin.full.svc.cluster.local (nginx checks DNS names only)
#   client-chain.crt server-chain.crt   leaf + CA, for peers that want the whole chain
#   client.pem server.pem         leaf + key in one file (HAProxy's `crt`)
# Keys are PKCS#8 ("BEGIN PRIVATE KEY"), mode 0600. The *.crt leaves are leaf-only: every peer
# trusts ca.crt directly, so no peer needs the CA in its own chain.
set -euo pipefail

dir=${1:?usage: gen-certs.sh DIR}
CLIENT_SAN=${CLIENT_SAN:-spiffe://cluster.local/ns/full/sa/sleep}
SERVER_SAN=${SERVER_SAN:-spiffe://cluster.local/ns/full/sa/httpbin}
SERVER_DNS=${SERVER_DNS:-httpbin.full.svc.cluster.local}
DAYS=${DAYS:-30}

mkdir -p "$dir"
cd "$dir"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

newkey ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" -subj "/O=tessera-bench/CN=tessera-bench-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out ca.crt

leaf() { # name CN SANs
    local name=$1 cn=$2 sans=$3
    newkey "$name.key"
    openssl req -new -key "$name.key" -subj "/O=tessera-bench/CN=$cn" -out "$name.csr"
    cat >"$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=critical,$sans
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EOF
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days "$DAYS" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    cat "$name.crt" ca.crt >"$name-chain.crt"
    cat "$name.crt" "$name.key" >"$name.pem"
    rm -f "$name.csr" "$name.ext"
}

leaf client sleep.full "URI:$CLIENT_SAN"
leaf server httpbin.full "URI:$SERVER_SAN,DNS:$SERVER_DNS"
rm -f ca.srl

# Certificates are public; keys stay 0600.
chmod 0644 ./*.crt
openssl verify -CAfile ca.crt client.crt server.crt >/dev/null
