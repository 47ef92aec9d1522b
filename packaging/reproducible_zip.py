"""Zip entries that come out the same in every build of one commit."""

import time
import zipfile

ZIP_EPOCH = 315532800  # 1980-01-01, the earliest date a zip can hold


def entry(name, epoch, compress=zipfile.ZIP_STORED):
    """A ZipInfo for a 0644 file dated *epoch* (``SOURCE_DATE_EPOCH``)."""
    info = zipfile.ZipInfo(name, time.gmtime(max(epoch, ZIP_EPOCH))[:6])
    info.compress_type = compress
    info.external_attr = 0o100644 << 16
    return info


def write(archive, files, epoch):
    """Write {name: bytes} *files* into *archive*, sorted by name."""
    for name in sorted(files):
        archive.writestr(entry(name, epoch), files[name])
