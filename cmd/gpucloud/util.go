package main

import "sort"

func slicesSort(s []string) { sort.Strings(s) }
