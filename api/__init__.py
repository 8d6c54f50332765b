"""The aiohttp application and the `pbx` command: the outermost layer, which nothing imports."""
