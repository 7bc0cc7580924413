// Command hello is what TestBuildBinaries builds: it prints "hello".
package main

import "fmt"

func main() { fmt.Println("hello") }
