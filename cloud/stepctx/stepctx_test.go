package stepctx

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestSteps(t *testing.T) {
	t.Run("a step's context ends with its end, not the next one's", func(t *testing.T) {
		var s Steps
		ctx1, end1, ok := s.Begin(context.Background(), 0)
		if !ok {
			t.Fatal("Begin refused before Stop")
		}
		end1()
		if ctx1.Err() == nil {
			t.Fatal("a step's context outlived its end")
		}
		ctx2, end2, ok := s.Begin(context.Background(), 0)
		if !ok || ctx2.Err() != nil {
			t.Fatalf("the next step: ok %v, err %v", ok, ctx2.Err())
		}
		end2()
	})
	t.Run("Stop cancels the step running and refuses later ones", func(t *testing.T) {
		var s Steps
		ctx, end, _ := s.Begin(context.Background(), 0)
		defer end()
		s.Stop()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("the running step's context after Stop: %v", ctx.Err())
		}
		if _, _, ok := s.Begin(context.Background(), 0); ok {
			t.Fatal("Begin after Stop was not refused")
		}
	})
	t.Run("Stop between steps", func(t *testing.T) {
		var s Steps
		_, end, _ := s.Begin(context.Background(), 0)
		end()
		s.Stop()
		if _, _, ok := s.Begin(context.Background(), 0); ok {
			t.Fatal("Begin after Stop was not refused")
		}
	})
	t.Run("the parent's end and the timeout end the step", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var s Steps
			parent, cancel := context.WithCancel(context.Background())
			ctx, end, _ := s.Begin(parent, 0)
			cancel()
			if ctx.Err() == nil {
				t.Fatal("the step outlived its parent")
			}
			end()
			ctx, end, _ = s.Begin(context.Background(), time.Minute)
			defer end()
			time.Sleep(time.Minute - time.Nanosecond)
			if ctx.Err() != nil {
				t.Fatalf("the step ended before its timeout: %v", ctx.Err())
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("after its timeout the step's context: %v", ctx.Err())
			}
		})
	})
}
