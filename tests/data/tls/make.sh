#!/bin/sh
# Makes the TLS fixtures of the tests (run from this folder; needs openssl):
# a CA, server certificates for localhost and 127.0.0.1 with ECDSA P-256,
# RSA 2048 and Ed25519 keys, a client certificate from the same CA (mutual
# TLS), and a client certificate from another CA that the server must
# refuse. Valid for 100 years; the keys are test keys and protect nothing.
set -eu
days=36500
san="subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
ca() { # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.crt" -days $days -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() { # name key-args ca ext subject
  openssl req -newkey $2 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$5"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial \
    -out "$1.crt" -days $days -extfile "$4"
  rm -f "$1.csr"
}
printf '%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" > server.ext
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
ca ca "ringnet test CA"
ca other-ca "another CA"
leaf server "ec -pkeyopt ec_paramgen_curve:P-256" ca server.ext localhost
leaf server-rsa "rsa:2048" ca server.ext localhost
leaf server-ed25519 "ed25519" ca server.ext localhost
leaf client "ec -pkeyopt ec_paramgen_curve:P-256" ca client.ext "ringnet test client"
leaf rogue-client "ec -pkeyopt ec_paramgen_curve:P-256" other-ca client.ext "rogue client"
rm -f server.ext client.ext ./*.srl other-ca.key
