#!/usr/bin/env python3
"""Writes a small OCI image archive (oci-layout + index.json + blobs) from this host's static busybox, with
no registry involved: make-oci-image.py OUT.tar REF"""
import hashlib, io, json, os, sys, tarfile

out, ref = sys.argv[1], sys.argv[2]
blobs = {}


def blob(data):
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def entry(t, name, kind, data=b'', target='', mode=0o755):
    info = tarfile.TarInfo(name)
    info.mode = mode
    if kind == 'dir':
        info.type = tarfile.DIRTYPE
    elif kind == 'link':
        info.type = tarfile.SYMTYPE
        info.linkname = target
    else:
        info.size = len(data)
    t.addfile(info, io.BytesIO(data) if kind == 'file' else None)


layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode='w') as t:
    for d in ('bin', 'etc', 'tmp'):
        entry(t, d, 'dir')
    entry(t, 'bin/busybox', 'file', open('/usr/bin/busybox', 'rb').read())
    for cmd in ('sh', 'echo', 'cat', 'sleep', 'ls', 'id', 'hostname', 'ps', 'true'):
        entry(t, 'bin/' + cmd, 'link', target='busybox')
    entry(t, 'etc/motd', 'file', b'made by the cube-shim test\n', mode=0o644)
layer_digest, layer_size = blob(layer.getvalue())
config = {'architecture': 'amd64', 'os': 'linux', 'config': {'Env': ['PATH=/bin'], 'Cmd': ['sh']},
          'rootfs': {'type': 'layers', 'diff_ids': [layer_digest]}}
config_digest, config_size = blob(json.dumps(config).encode())
manifest = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
            'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': config_digest,
                       'size': config_size},
            'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar', 'digest': layer_digest,
                        'size': layer_size}]}
manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
index = {'schemaVersion': 2, 'manifests': [{
    'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': manifest_digest, 'size': manifest_size,
    'annotations': {'org.opencontainers.image.ref.name': ref},
    'platform': {'architecture': 'amd64', 'os': 'linux'}}]}
with tarfile.open(out, 'w') as t:
    entry(t, 'oci-layout', 'file', b'{"imageLayoutVersion":"1.0.0"}', mode=0o644)
    entry(t, 'index.json', 'file', json.dumps(index).encode(), mode=0o644)
    entry(t, 'blobs', 'dir')
    entry(t, 'blobs/sha256', 'dir')
    for digest, data in blobs.items():
        entry(t, 'blobs/sha256/' + digest.split(':')[1], 'file', data, mode=0o644)
