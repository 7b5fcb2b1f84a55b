// A private CA and a server certificate it signed, made with the openssl CLI:
// for an https S3 endpoint that nothing trusts until it is given the CA.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export interface PrivateCa {
  /** The CA's certificate (PEM): what a client must be given to trust the server. */
  caPem: string;
  /** The server's certificate (PEM), signed by the CA, for `ips`. */
  certPem: string;
  keyPem: string;
  /** A directory holding ca.pem, cert.pem and key.pem (for a server that reads files). */
  dir: string;
  remove(): void;
}

export function makePrivateCa(ips: string[], name = "replicator test CA"): PrivateCa {
  const dir = mkdtempSync(path.join(tmpdir(), "replicator-ca-"));
  const f = (n: string): string => path.join(dir, n);
  const ssl = (...args: string[]): void => {
    execFileSync("openssl", args, { stdio: "pipe" });
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl("req", "-x509", ...ec, "-days", "2", "-subj", `/CN=${name}`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", f("ca-key.pem"), "-out", f("ca.pem"));
  ssl("req", ...ec, "-subj", `/CN=${ips[0] ?? "127.0.0.1"}`, "-keyout", f("key.pem"), "-out", f("server.csr"));
  writeFileSync(f("ext.cnf"), `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(",")}\nextendedKeyUsage=serverAuth\n`);
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-days", "2", "-extfile", f("ext.cnf"), "-out", f("cert.pem"));
  return {
    caPem: readFileSync(f("ca.pem"), "utf8"),
    certPem: readFileSync(f("cert.pem"), "utf8"),
    keyPem: readFileSync(f("key.pem"), "utf8"),
    dir,
    remove: () => {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
