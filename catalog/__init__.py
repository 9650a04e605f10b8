"""Generated dual-kernel modules (do not edit by hand: run `dualact catalog regenerate`)."""
