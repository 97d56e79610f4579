"""Network drivers, one folder each: everything of a driver, behind the hooks of `driver.Driver`."""
