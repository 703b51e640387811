package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/web"
)

func runView(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("view", "FILE.pb.gz [--listen 127.0.0.1:7071]\n\nServes the flame graph viewer for one pprof file (ours or any other, e.g. a Go CPU profile).\nIt opens nothing else on the network.", stdout)
	listen := fs.String("listen", "127.0.0.1:7071", "address to serve the viewer on")
	// Accept the file before or after the flags.
	var file string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if file == "" {
		return usageError{errors.New("name the pprof file to view")}
	}
	src, err := web.FileSource(file)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: web.NewHandler(src, web.Options{Title: "Scorch: " + file}), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "scorch: viewing %s at http://%s/ (Ctrl-C to stop)\n", file, ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	}
}
