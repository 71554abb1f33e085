"""Where is the wearer: sites, buildings, floors, rooms and zones; cell towers; BLE receivers; fusion; PIDF-LO."""
