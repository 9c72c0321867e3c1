package main

import "gpucloud/web"

// The dashboard of `gpucloud up`.
func init() { dashboardHandler = web.Handler }
