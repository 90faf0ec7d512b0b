# Shared by the proxy benchmarks (run.sh, grpc.sh, ocsp.sh, ws.sh); sourced, not run.

# key FILE: a new ECDSA P-256 key.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# leaf NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem issued by ca.pem/ca.key.
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}

# bench_certs [CLIENT_EXTENSION]: in the current directory, the test CA (ca.key, ca.pem),
# the server's certificate (localhost, 127.0.0.1) and the load generator's client
# certificate (a SPIFFE ID), with CLIENT_EXTENSION as one more extension line of the latter.
bench_certs() {
  key ca.key
  openssl req -x509 -new -key ca.key -subj "/CN=bench CA" -days 2 -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  leaf server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature
basicConstraints=CA:FALSE"
  leaf client "/CN=loadgen" "subjectAltName=URI:spiffe://bench.example/loadgen
extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature
basicConstraints=CA:FALSE${1:+
$1}"
}
