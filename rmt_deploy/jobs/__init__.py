"""Jobs: what a command does, start to end (export, bench's set-up lives in ``bench``, doctor,
presets). Each job validates everything first, then works, then writes its folder atomically."""
