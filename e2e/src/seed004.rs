//! Seed 004 ("Securing a Gateway with HTTPS"): the certificate script it runs and its
//! commands (`kubectl` as it is, `istioctl` → `tessera`).

/// What the seed's `generate.sh httpbin.example.com <password>` (mtls-go-example) makes,
/// with openssl: `1_root` (root CA), `2_intermediate` (intermediate CA and
/// `ca-chain.cert.pem`), `3_application` (server) and `4_client` (client), all with
/// `CN=httpbin.example.com` and the script's `C=US, ST=Denial, L=Springfield, O=Dis`.
pub const GENERATE_SH: &str = r#"#!/bin/bash
# What mtls-go-example's generate.sh makes: a root CA, an intermediate CA, a server and a
# client certificate for $1, with the chain file ca-chain.cert.pem.
set -euo pipefail
DOMAIN=$1
mkdir -p 1_root/private 1_root/certs 2_intermediate/private 2_intermediate/certs 2_intermediate/csr 3_application/private 3_application/certs 3_application/csr 4_client/private 4_client/certs 4_client/csr
SUBJ="/C=US/ST=Denial/L=Springfield/O=Dis"
openssl genrsa -out 1_root/private/ca.key.pem 4096 2>/dev/null
openssl req -x509 -new -key 1_root/private/ca.key.pem -sha256 -days 3650 -subj "$SUBJ/CN=$DOMAIN" -out 1_root/certs/ca.cert.pem \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,digitalSignature,cRLSign,keyCertSign"
openssl genrsa -out 2_intermediate/private/intermediate.key.pem 4096 2>/dev/null
openssl req -new -key 2_intermediate/private/intermediate.key.pem -subj "$SUBJ/CN=$DOMAIN" -out 2_intermediate/csr/intermediate.csr.pem
printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,digitalSignature,cRLSign,keyCertSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always,issuer\n' > ext_int.cnf
openssl x509 -req -in 2_intermediate/csr/intermediate.csr.pem -CA 1_root/certs/ca.cert.pem -CAkey 1_root/private/ca.key.pem -CAcreateserial -days 3650 -sha256 -extfile ext_int.cnf -out 2_intermediate/certs/intermediate.cert.pem 2>/dev/null
cat 2_intermediate/certs/intermediate.cert.pem 1_root/certs/ca.cert.pem > 2_intermediate/certs/ca-chain.cert.pem
for kind in 3_application 4_client; do
  openssl genrsa -out $kind/private/$DOMAIN.key.pem 2048 2>/dev/null
  openssl req -new -key $kind/private/$DOMAIN.key.pem -subj "$SUBJ/CN=$DOMAIN" -out $kind/csr/$DOMAIN.csr.pem
  if [ $kind = 3_application ]; then eku=serverAuth; san="subjectAltName=DNS:$DOMAIN"; else eku=clientAuth; san="subjectAltName=DNS:$DOMAIN"; fi
  printf "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=$eku\n$san\n" > ext_$kind.cnf
  openssl x509 -req -in $kind/csr/$DOMAIN.csr.pem -CA 2_intermediate/certs/intermediate.cert.pem -CAkey 2_intermediate/private/intermediate.key.pem -CAcreateserial -days 375 -sha256 -extfile ext_$kind.cnf -out $kind/certs/$DOMAIN.cert.pem 2>/dev/null
done
"#;

/// The seed's Gateway, SIMPLE with the mounted files.
pub const GATEWAY_SIMPLE: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway # 使用 Istio 的缺省 Gateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      serverCertificate: /etc/istio/ingressgateway-certs/tls.crt
      privateKey: /etc/istio/ingressgateway-certs/tls.key
    hosts:
    - "httpbin.example.com"
"#;

/// The seed's VirtualService.
pub const VIRTUAL_SERVICE: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - "httpbin.example.com"
  gateways:
  - httpbin-gateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#;

/// The seed's Gateway, MUTUAL with the mounted CA chain.
pub const GATEWAY_MUTUAL: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway # 是用缺省的 Istio Gateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: MUTUAL
      serverCertificate: /etc/istio/ingressgateway-certs/tls.crt
      privateKey: /etc/istio/ingressgateway-certs/tls.key
      caCertificates: /etc/istio/ingressgateway-ca-certs/ca-chain.cert.pem
    hosts:
    - "httpbin.example.com"
"#;

/// The same gateway with its certificates from a Secret (current Istio's flow).
pub const GATEWAY_CREDENTIAL: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: MODE
      credentialName: httpbin-credential
    hosts:
    - "httpbin.example.com"
"#;

/// The teapot httpbin draws for `/status/418`.
pub const TEAPOT: &str = "-=[ teapot ]=-";
