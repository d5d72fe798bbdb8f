// The small internet of the egress test, run inside its network namespace: a DNS server (UDP 53) for a few
// names, and HTTP (80) and HTTPS (443, a test CA's certificate) servers that answer "hello <Host>" and print
// one JSON line per request they serve ({kind, host, sni, headers}); TCP 8080 answers "tcp". Usage:
//   node inet-server.mjs ZONE_JSON CERT KEY     ZONE_JSON: {"name": "a.b.c.d", ...}
import dgram from 'node:dgram';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { readFileSync } from 'node:fs';

const [zoneJson, certFile, keyFile] = process.argv.slice(2);
const zone = JSON.parse(zoneJson);

// DNS: one question per query; A records from the zone (TTL 60), NXDOMAIN for anything else.
const dns = dgram.createSocket('udp4');
dns.on('message', (q, from) => {
  if (q.length < 12) return;
  let off = 12;
  const labels = [];
  while (off < q.length && q[off] !== 0) {
    labels.push(q.subarray(off + 1, off + 1 + q[off]).toString());
    off += 1 + q[off];
  }
  const qend = off + 5;
  if (qend > q.length) return;
  const type = q.readUInt16BE(off + 1);
  const name = labels.join('.').toLowerCase();
  const addr = type === 1 ? zone[name] : undefined;
  const head = Buffer.alloc(12);
  q.copy(head, 0, 0, 2);
  head.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | (zone[name] ? 0 : 3), 2); // QR AA RD, rcode
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(addr ? 1 : 0, 6);
  const parts = [head, q.subarray(12, qend)];
  if (addr) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(60, 6);
    rr.writeUInt16BE(4, 10);
    addr.split('.').forEach((b, i) => rr.writeUInt8(Number(b), 12 + i));
    parts.push(rr);
  }
  dns.send(Buffer.concat(parts), from.port, from.address);
});
let listening = 0;
const up = () => { if (++listening === 5) console.log(JSON.stringify({ kind: 'ready' })); };
dns.bind(53, '0.0.0.0', up);

const serve = (kind) => (req, res) => {
  const line = { kind, host: req.headers.host, sni: req.socket.servername || null, headers: req.headers };
  console.log(JSON.stringify(line));
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`hello ${req.headers.host}\n`);
};
http.createServer(serve('http')).listen(80, '0.0.0.0', up);
// a plain TCP service (not the web ports): answers "tcp" and closes
net.createServer((s) => { s.on('error', () => {}); s.end('tcp\n'); }).listen(8080, '0.0.0.0', up); // a reset client must not end the server
https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, serve('https')).listen(443, '0.0.0.0', up);

// SOCKS5 (RFC 1928/1929) on 1080: user "tunnel", password "pw"; CONNECT to IPv4 addresses only. Prints
// {kind: "socks", dst} for each connection it carries; stops when "socks-off" comes on stdin.
const socks = net.createServer((c) => {
  let buf = Buffer.alloc(0), step = 0;
  const need = (n) => buf.length >= n;
  c.on('error', () => {});
  c.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (step === 0 && need(2) && need(2 + buf[1])) {
      const offered = [...buf.subarray(2, 2 + buf[1])];
      buf = buf.subarray(2 + buf[1]);
      if (!offered.includes(2)) return c.end(Buffer.from([5, 0xff]));
      c.write(Buffer.from([5, 2]));
      step = 1;
    }
    if (step === 1 && need(2) && need(3 + buf[1]) && need(3 + buf[1] + buf[2 + buf[1]])) {
      const ul = buf[1], user = buf.subarray(2, 2 + ul).toString(), pl = buf[2 + ul];
      const pass = buf.subarray(3 + ul, 3 + ul + pl).toString();
      buf = buf.subarray(3 + ul + pl);
      if (user !== 'tunnel' || pass !== 'pw') return c.end(Buffer.from([1, 1]));
      c.write(Buffer.from([1, 0]));
      step = 2;
    }
    if (step === 2 && need(10)) {
      if (buf[1] !== 1 || buf[3] !== 1) return c.end(Buffer.from([5, 8, 0, 1, 0, 0, 0, 0, 0, 0]));
      const dst = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port = buf.readUInt16BE(8);
      const rest = buf.subarray(10);
      step = 3;
      c.pause();
      const up = net.connect(port, dst, () => {
        console.log(JSON.stringify({ kind: 'socks', dst: `${dst}:${port}` }));
        c.write(Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
        if (rest.length) up.write(rest);
        c.removeAllListeners('data');
        c.pipe(up).pipe(c);
        c.resume();
      });
      up.on('error', () => c.destroy());
    }
  });
});
socks.listen(1080, '0.0.0.0', up);
// "socks-off" on stdin stops the SOCKS5 server (its connections too): the test's outage
const carried = new Set();
socks.on('connection', (c) => { carried.add(c); c.on('close', () => carried.delete(c)); });
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (d.includes('socks-off')) {
    socks.close(() => console.log(JSON.stringify({ kind: 'socks-off' })));
    for (const c of carried) c.destroy();
  }
});
