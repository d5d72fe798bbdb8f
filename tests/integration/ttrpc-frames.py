#!/usr/bin/env python3
"""Sends malformed ttrpc frames to a shim socket and prints what came back, one line each:
junk-request, unknown-method, junk-payload -> the gRPC status code of the error response;
oversized -> "closed" when the shim dropped the connection. ttrpc-frames.py SOCKET"""
import socket, struct, sys

path = sys.argv[1]


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << s
        s += 7
        if not c & 0x80:
            return v, i


def fields(b):
    i, out = 0, {}
    while i < len(b):
        key, i = varint(b, i)
        f, t = key >> 3, key & 7
        if t == 0:
            v, i = varint(b, i)
        elif t == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError('wire type %d' % t)
        out[f] = v
    return out


def ld(field, data):
    return bytes([field << 3 | 2, len(data)]) + data


def exchange(payload, length=None):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(struct.pack('>IIBB', len(payload) if length is None else length, 1, 1, 0) + payload)
    hdr = b''
    while len(hdr) < 10:
        chunk = s.recv(10 - len(hdr))
        if not chunk:
            return 'closed'
        hdr += chunk
    n = struct.unpack('>I', hdr[:4])[0]
    body = b''
    while len(body) < n:
        body += s.recv(n - len(body))
    s.close()
    status = fields(fields(body).get(1, b''))
    return str(status.get(1, 0))


svc = b'containerd.task.v2.Task'
print('junk-request', exchange(b'\xff\xff\xff\xff'))
print('unknown-method', exchange(ld(1, svc) + ld(2, b'Nope')))
print('junk-payload', exchange(ld(1, svc) + ld(2, b'State') + ld(3, b'\xff\xff\xff')))
print('oversized', exchange(b'', length=0x7fffffff))
