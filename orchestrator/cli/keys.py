"""``python -m orchestrator keys``: CurveZMQ key files for hosts and clients on other machines.

    keys init DIR                        the coordinator's pair + empty allow-lists hosts/, clients/
    keys generate DIR --name gpu-box-1   a host's (or client's) pair, on that machine
    keys authorize DIR FILE.key --as host   let that public key in (copied to DIR/hosts/)
    keys revoke DIR NAME --as host       take it out again (the coordinator reads lists at start)
    keys list DIR                        the coordinator's public key and who is allowed in

Secret files are created 0600 and refused when others can read them; public ones are 0644.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.wire import curve
from orchestrator.wire.errors import ConfigError

_ROLES = {"host": curve.HOSTS_DIR, "client": curve.CLIENTS_DIR}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="the coordinator's key pair and its allow-list folders")
    init.add_argument("dir")
    init.add_argument("--force", action="store_true", help="replace an existing pair")
    gen = sub.add_parser("generate", help="a key pair for a host or a client")
    gen.add_argument("dir")
    gen.add_argument("--name", default="host", help="file name and health label (default host)")
    gen.add_argument("--force", action="store_true", help="replace an existing pair")
    auth = sub.add_parser("authorize", help="add a public key to the coordinator's allow-list")
    auth.add_argument("dir", help="the coordinator's key folder")
    auth.add_argument("public_key", help="the NAME.key file of a host or client")
    auth.add_argument("--as", dest="role", choices=sorted(_ROLES), required=True)
    auth.add_argument("--name", help="label in health and logs (default: the file's name)")
    revoke = sub.add_parser("revoke", help="remove a public key from the allow-list")
    revoke.add_argument("dir")
    revoke.add_argument("name")
    revoke.add_argument("--as", dest="role", choices=sorted(_ROLES), required=True)
    show = sub.add_parser("list", help="the coordinator's public key and the allow-lists")
    show.add_argument("dir")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    action = args.keys_command
    if action == "init":
        pair = curve.generate_keypair(folder, curve.COORDINATOR_KEY_NAME, overwrite=args.force)
        for sub in _ROLES.values():
            (folder / sub).mkdir(mode=0o700, exist_ok=True)
        print(f"coordinator public key: {pair.public.decode()}")
        print(f"give {folder / 'coordinator.key'} to every host and remote client")
    elif action == "generate":
        pair = curve.generate_keypair(folder, args.name, overwrite=args.force)
        print(f"{args.name} public key: {pair.public.decode()}")
        print(
            f"authorize it on the coordinator: keys authorize KEYS {folder / args.name}.key --as host"
        )
    elif action == "authorize":
        source = Path(args.public_key)
        public = curve.load_public_key(source)
        name = curve.check_name(args.name or source.name.split(".key")[0])
        target = folder / _ROLES[args.role] / f"{name}{curve.PUBLIC_SUFFIX}"
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        curve.write_public_key(target, public)
        print(
            f"authorized {args.role} {name}: {public.decode()} "
            "(a running coordinator lets it in at its next handshake)"
        )
    elif action == "revoke":
        target = folder / _ROLES[args.role] / f"{curve.check_name(args.name)}{curve.PUBLIC_SUFFIX}"
        if not target.is_file():
            raise ConfigError(f"{target} does not exist (fix: keys list {folder})")
        target.unlink()
        print(
            f"revoked {args.role} {args.name} (refused from its next handshake; a live "
            f"connection stays until it drops: restart that {args.role} to cut it)"
        )
    else:
        public = curve.load_public_key(
            folder / f"{curve.COORDINATOR_KEY_NAME}{curve.PUBLIC_SUFFIX}"
        )
        print(f"coordinator: {public.decode()}")
        for role, sub in _ROLES.items():
            for key, name in curve.load_allow_list(folder / sub).items():
                print(f"{role}: {name} {key.decode()}")
    return 0
