"use client";
import { Suspense } from "react";
import { AppShell } from "@/components/AppShell";
import { RunView } from "@/components/RunView";

export default function Runs() {
  return (
    <AppShell>
      <Suspense fallback={<p className="muted">Loading…</p>}>
        <RunView />
      </Suspense>
    </AppShell>
  );
}
