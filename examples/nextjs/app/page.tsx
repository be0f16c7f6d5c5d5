"use client";
import { AppShell } from "@/components/AppShell";
import { Chat } from "@/components/Chat";

export default function Home() {
  return (
    <AppShell>
      <Chat />
    </AppShell>
  );
}
