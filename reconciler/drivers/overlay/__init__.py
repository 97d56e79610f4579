"""The overlay driver: one network across hosts over VXLAN, programmed from the shared spec."""
