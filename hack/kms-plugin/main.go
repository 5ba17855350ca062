// A KMS v2 plugin for the tests: the Kubernetes KMS v2 gRPC protocol (k8s.io/kms/pkg/service, the
// server every KMS v2 plugin is built on) over a unix socket, with AES-256-GCM keys read from a
// file instead of a cloud KMS or an HSM. The operator's KMS v2 client talks to it as it would to
// any plugin.
//
//	kms-plugin -socket /run/kms.sock -keys keys.txt
//
// keys.txt holds one "<key id> <64 hex digits>" per line; the last line is the current key, so
// appending a line rotates (the file is read again on every call). Decrypt opens with the key the
// request names, as a plugin does with its remote key versions.
package main

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/kms/pkg/service"
)

type plugin struct {
	keys  string
	calls atomic.Int64
}

func (p *plugin) load() (current string, keys map[string][]byte, err error) {
	f, err := os.Open(p.keys)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	keys = map[string][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return "", nil, fmt.Errorf("a line of %s is not \"<id> <hex key>\"", p.keys)
		}
		key, err := hex.DecodeString(fields[1])
		if err != nil || len(key) != 32 {
			return "", nil, fmt.Errorf("key %q is not 32 bytes of hex", fields[0])
		}
		keys[fields[0]] = key
		current = fields[0]
	}
	if current == "" {
		return "", nil, fmt.Errorf("%s has no key", p.keys)
	}
	return current, keys, sc.Err()
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (p *plugin) Status(context.Context) (*service.StatusResponse, error) {
	current, _, err := p.load()
	if err != nil {
		return &service.StatusResponse{Version: "v2", Healthz: err.Error()}, nil
	}
	return &service.StatusResponse{Version: "v2", Healthz: "ok", KeyID: current}, nil
}

func (p *plugin) Encrypt(_ context.Context, _ string, data []byte) (*service.EncryptResponse, error) {
	p.calls.Add(1)
	current, keys, err := p.load()
	if err != nil {
		return nil, err
	}
	aead, err := gcm(keys[current])
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sealed := aead.Seal(nonce, nonce, data, []byte(current))
	// An annotation, as cloud plugins return them: the operator must store it and send it back.
	return &service.EncryptResponse{Ciphertext: sealed, KeyID: current, Annotations: map[string][]byte{"kms.byok.test/alg": []byte("aes-256-gcm")}}, nil
}

func (p *plugin) Decrypt(_ context.Context, _ string, req *service.DecryptRequest) ([]byte, error) {
	p.calls.Add(1)
	if string(req.Annotations["kms.byok.test/alg"]) != "aes-256-gcm" {
		return nil, fmt.Errorf("the annotations of the encrypt answer were not sent back")
	}
	_, keys, err := p.load()
	if err != nil {
		return nil, err
	}
	key, ok := keys[req.KeyID]
	if !ok {
		return nil, fmt.Errorf("unknown key id %q", req.KeyID)
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if len(req.Ciphertext) < aead.NonceSize() {
		return nil, fmt.Errorf("ciphertext too short")
	}
	nonce, sealed := req.Ciphertext[:aead.NonceSize()], req.Ciphertext[aead.NonceSize():]
	return aead.Open(nil, nonce, sealed, []byte(req.KeyID))
}

func main() {
	socket := flag.String("socket", "", "unix socket to listen on")
	keys := flag.String("keys", "", "key file: \"<id> <hex>\" lines, the last one current")
	flag.Parse()
	if *socket == "" || *keys == "" {
		log.Fatal("-socket and -keys are required")
	}
	p := &plugin{keys: *keys}
	if _, _, err := p.load(); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*socket)
	srv := service.NewGRPCService(*socket, 10*time.Second, p)
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		log.Printf("stopping after %d encrypt/decrypt calls", p.calls.Load())
		srv.Shutdown()
	}()
	log.Printf("KMS v2 plugin listening on %s", *socket)
	if err := srv.ListenAndServe(); err != nil {
		log.Fatal(err)
	}
}
