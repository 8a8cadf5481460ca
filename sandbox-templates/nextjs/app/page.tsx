export default function Page() {
  return (
    <main className="flex min-h-screen items-center justify-center bg-background p-8">
      <div className="text-center">
        <h1 className="text-2xl font-semibold tracking-tight">Your app will appear here</h1>
        <p className="mt-2 text-sm text-muted-foreground">
          The code agent is building it. This page reloads as files change.
        </p>
      </div>
    </main>
  );
}
