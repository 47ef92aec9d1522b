"""Print a spec ``%changelog`` made from debian/changelog.

debian/changelog is the one changelog of the project; the rpm gets the
same entries, with their dates, which also sets the rpm build time.

Usage: dpkg-parsechangelog --all --format rfc822 | rpm_changelog.py RELEASE
"""

import email.parser
import email.utils
import sys


def paragraphs(text):
    for block in text.strip().split("\n\n"):
        yield email.parser.Parser().parsestr(block)


def bullets(changes):
    """The ``*`` items of a Changes field, continuation lines joined."""
    items = []
    for line in changes.splitlines()[1:]:
        line = line.strip()
        if line.startswith("* "):
            items.append(line[2:])
        elif line and line != "." and items:
            items[-1] += " " + line
    return items


def entry(fields, release):
    when = email.utils.parsedate_to_datetime(fields["Date"])
    lines = ["* %s %s - %s-%s" % (when.strftime("%a %b %d %Y"),
                                  fields["Maintainer"], fields["Version"],
                                  release)]
    lines += ["- " + item for item in bullets(fields["Changes"])]
    return "\n".join(lines)


if __name__ == "__main__":
    text = sys.stdin.read()
    print("\n\n".join(entry(p, sys.argv[1]) for p in paragraphs(text)))
