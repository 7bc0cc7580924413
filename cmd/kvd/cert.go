package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/internal/tlsconf"
)

func certCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Make a local CA and node and client certificates",
		Long: `Make a local certificate authority and the certificates kvd and its clients
use (ECDSA P-256, standard library only). create-ca writes DIR/ca.crt and
DIR/ca.key; node and client write DIR/NAME.crt and DIR/NAME.key signed by them.
Keys are written with mode 0600.

A node certificate names its node as the URI SAN dialkv://node/ID, with DNS
localhost and IP 127.0.0.1, and serves as both server and client certificate:
give it to --cert-file and --peer-cert-file. A client certificate has CN NAME
and URI SAN dialkv://user/NAME.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "certs", "directory of the CA and the certificates")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "create-ca",
			Short: "Make a CA: DIR/ca.crt and DIR/ca.key",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if _, err := os.Stat(filepath.Join(dir, tlsconf.CAKeyFile)); err == nil {
					return fmt.Errorf("%s already exists; remove it to make a new CA", filepath.Join(dir, tlsconf.CAKeyFile))
				}
				if err := createCA(dir); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", filepath.Join(dir, tlsconf.CACertFile), filepath.Join(dir, tlsconf.CAKeyFile))
				return nil
			},
		},
		&cobra.Command{
			Use:   "node ID",
			Short: "Make node ID's certificate: DIR/ID.crt and DIR/ID.key",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return issueCert(cmd, dir, args[0], true)
			},
		},
		&cobra.Command{
			Use:   "client NAME",
			Short: "Make user NAME's client certificate: DIR/NAME.crt and DIR/NAME.key",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return issueCert(cmd, dir, args[0], false)
			},
		},
	)
	return cmd
}

func createCA(dir string) error {
	// A name of its own, so that after a rotation the old and the new CA
	// are told apart by name too (in logs, in openssl's output).
	var tag [4]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return fmt.Errorf("CA name: %w", err)
	}
	ca, err := tlsconf.NewCA(fmt.Sprintf("dialkv CA %x", tag), tlsconf.Lifetime{})
	if err != nil {
		return err
	}
	p, err := ca.Pair()
	if err != nil {
		return err
	}
	return p.Write(dir, "ca")
}

func issueCert(cmd *cobra.Command, dir, name string, node bool) error {
	ca, err := tlsconf.LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no CA in %s: run 'kvd cert create-ca --dir %s' first: %w", dir, dir, err)
	}
	if err != nil {
		return err
	}
	if err := writeLeaf(ca, dir, name, node); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	return nil
}

func writeLeaf(ca *tlsconf.CA, dir, name string, node bool) error {
	var p tlsconf.Pair
	var err error
	if node {
		p, err = ca.IssueNode(name, tlsconf.Lifetime{})
	} else {
		p, err = ca.IssueClient(name, tlsconf.Lifetime{})
	}
	if err != nil {
		return err
	}
	return p.Write(dir, name)
}
