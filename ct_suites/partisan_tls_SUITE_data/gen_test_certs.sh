#!/bin/sh
# Test-only certificates for the TLS tests and benchmarks, generated at test time (no private
# key is committed). Usage: gen_test_certs.sh DIR (used by partisan_tls_SUITE and bench/run.sh tls)
#   ca.pem             the cluster's CA            ca2.pem      another CA (the "wrong CA")
#   node.pem/.key      signed by ca, valid now, SAN IP:127.0.0.1 and DNS:localhost
#   node2.pem/.key     the same, a second identity (rotation)
#   wrong.pem/.key     signed by ca2
#   expired.pem/.key   signed by ca, valid 2020-01-01 .. 2020-01-02
#   ca_both.pem        ca and ca2 (a trust bundle during a CA rotation)
#   dist.pem/.key      signed by ca, SAN also DNS:127.0.0.1: OTP 25's ssl checks a host given as
#                      an address against DNS names (for disterl over TLS in bench/tls.sh)
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }
cat > ext.cnf <<'CNF'
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[dist]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:127.0.0.1
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
for ca in ca ca2; do
  q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $ca.key -out $ca.pem \
    -days 30 -subj "/CN=partisan test $ca" -extensions ca -config ext.cnf -set_serial 1
done
leaf() { # name ca [extensions]
  q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $1.key -out $1.csr -subj "/CN=$1"
  q openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem -days 30 -extfile ext.cnf -extensions ${3:-leaf}
}
leaf node ca
leaf node2 ca
leaf wrong ca2
leaf dist ca dist
# Expired: `openssl ca` is the CLI that takes explicit dates.
q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout expired.key -out expired.csr -subj "/CN=expired"
mkdir -p cadb && : > cadb/index.txt && echo 1000 > cadb/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test
[test]
dir = cadb
database = cadb/index.txt
serial = cadb/serial
new_certs_dir = cadb
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
CNF
q openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200102000000Z -extfile ext.cnf -extensions leaf -notext
cat ca.pem ca2.pem > ca_both.pem
rm -f ./*.csr
