"""``terok-install``: install, uninstall and status of the supervisor hook."""

import argparse
import json
import logging
import sys

from terok_install import __version__
from terok_install.errors import InstallError

log = logging.getLogger("terok_install")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="terok-install",
        description="Install, check or remove the terok-sandbox supervisor "
                    "OCI hook for Podman.")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, helptext in (
            ("install", "lay the hook down and register it"),
            ("uninstall", "take out what install added"),
            ("status", "check the install; exit 1 if anything is off")):
        sub = commands.add_parser(name, help=helptext, description=helptext)
        sub.add_argument("--hooks-dir", metavar="DIR",
                         help="put the descriptors in DIR and register DIR")
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="print only warnings and errors")
        if name == "install":
            sub.add_argument("--sandbox-bin", metavar="PATH",
                             help="the terok-sandbox runtime to run")
        if name == "status":
            sub.add_argument("--json", action="store_true",
                             help="print the report as JSON")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="terok-install: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except InstallError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def run_install(args):
    from terok_install.installer import install_supervisor_hooks
    result = install_supervisor_hooks(hooks_dir=args.hooks_dir,
                                      sandbox_bin=args.sandbox_bin)
    for warning in result.warnings:
        log.warning("warning: %s", warning)
    log.info("installed in %s (%s), registered in %s", result.state_root,
             "%d file(s) changed" % len(result.changed) if result.changed
             else "already up to date", result.containers_conf)
    log.info("terok-sandbox: %s", result.sandbox_bin or "looked up at spawn")
    return 0


def run_uninstall(args):
    from terok_install.installer import uninstall_supervisor_hooks
    result = uninstall_supervisor_hooks(hooks_dir=args.hooks_dir)
    for warning in result.warnings:
        log.warning("warning: %s", warning)
    for change in result.changed:
        log.info("removed: %s", change)
    log.info("uninstalled from %s", result.state_root)
    if result.running:
        log.warning("%d supervisor(s) still running; they end with their "
                    "containers", len(result.running))
    return 0


def run_status(args):
    from terok_install.status import check
    checks, live = check(hooks_dir=args.hooks_dir)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "supervisors": live, "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail}
            for c in checks]}, indent=2))
        return 0 if ok else 1
    for c in checks:
        if not (args.quiet and c.ok):
            print("%-4s %-14s %s" % ("ok" if c.ok else "FAIL", c.name,
                                     c.detail))
    if not args.quiet:
        print("%d supervisor(s) running; %s" % (
            len(live), "all good" if ok else "install needs repair"))
    return 0 if ok else 1


COMMANDS = {"install": run_install, "uninstall": run_uninstall,
            "status": run_status}
