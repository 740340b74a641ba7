from minipod.cli.entry import entry

entry()
