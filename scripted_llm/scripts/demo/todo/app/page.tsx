"use client";

import { useState, type FormEvent } from "react";
import { ListTodo, Plus } from "lucide-react";

import { TodoItem, type Todo } from "@/components/todo-item";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import {
  Card,
  CardContent,
  CardDescription,
  CardFooter,
  CardHeader,
  CardTitle,
} from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { cn } from "@/lib/utils";

type Filter = "all" | "active" | "done";

const FILTERS: { value: Filter; label: string }[] = [
  { value: "all", label: "All" },
  { value: "active", label: "Active" },
  { value: "done", label: "Done" },
];

const STARTER_TODOS: Todo[] = [
  { id: 1, title: "Sketch the layout", done: true },
  { id: 2, title: "Wire up the state", done: false },
  { id: 3, title: "Ship it", done: false },
];

export default function Page() {
  const [todos, setTodos] = useState<Todo[]>(STARTER_TODOS);
  const [draft, setDraft] = useState("");
  const [filter, setFilter] = useState<Filter>("all");

  const remaining = todos.filter((todo) => !todo.done).length;
  const visible = todos.filter((todo) =>
    filter === "all" ? true : filter === "active" ? !todo.done : todo.done
  );

  function addTodo(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const title = draft.trim();
    if (!title) return;
    setTodos((current) => [
      ...current,
      { id: Math.max(0, ...current.map((todo) => todo.id)) + 1, title, done: false },
    ]);
    setDraft("");
  }

  function toggleTodo(id: number) {
    setTodos((current) =>
      current.map((todo) => (todo.id === id ? { ...todo, done: !todo.done } : todo))
    );
  }

  function deleteTodo(id: number) {
    setTodos((current) => current.filter((todo) => todo.id !== id));
  }

  function clearDone() {
    setTodos((current) => current.filter((todo) => !todo.done));
  }

  return (
    <main className="flex min-h-screen items-start justify-center bg-muted/40 px-4 py-16">
      <Card className="w-full max-w-md">
        <CardHeader>
          <CardTitle className="flex items-center gap-2 text-2xl">
            <ListTodo className="size-6 text-primary" />
            Tasks
          </CardTitle>
          <CardDescription>
            {remaining === 0
              ? "All caught up."
              : `${remaining} ${remaining === 1 ? "task" : "tasks"} left to do.`}
          </CardDescription>
        </CardHeader>
        <CardContent className="space-y-4">
          <form onSubmit={addTodo} className="flex gap-2">
            <Input
              value={draft}
              onChange={(event) => setDraft(event.target.value)}
              placeholder="What needs doing?"
              aria-label="New task"
            />
            <Button type="submit" disabled={!draft.trim()}>
              <Plus className="size-4" />
              Add
            </Button>
          </form>
          <div className="flex gap-2" role="tablist" aria-label="Filter tasks">
            {FILTERS.map(({ value, label }) => {
              const count =
                value === "all"
                  ? todos.length
                  : value === "active"
                    ? remaining
                    : todos.length - remaining;
              return (
                <Button
                  key={value}
                  role="tab"
                  aria-selected={filter === value}
                  variant={filter === value ? "default" : "outline"}
                  size="sm"
                  onClick={() => setFilter(value)}
                >
                  {label}
                  <Badge
                    variant="secondary"
                    className={cn(filter === value && "bg-primary-foreground text-primary")}
                  >
                    {count}
                  </Badge>
                </Button>
              );
            })}
          </div>
          {visible.length === 0 ? (
            <p className="py-8 text-center text-sm text-muted-foreground">
              {filter === "done" ? "Nothing finished yet." : "Nothing here. Add a task above."}
            </p>
          ) : (
            <ul className="space-y-2">
              {visible.map((todo) => (
                <TodoItem key={todo.id} todo={todo} onToggle={toggleTodo} onDelete={deleteTodo} />
              ))}
            </ul>
          )}
        </CardContent>
        <CardFooter className="justify-between text-sm text-muted-foreground">
          <span>
            {todos.length - remaining} of {todos.length} done
          </span>
          <Button
            variant="ghost"
            size="sm"
            onClick={clearDone}
            disabled={todos.length === remaining}
          >
            Clear done
          </Button>
        </CardFooter>
      </Card>
    </main>
  );
}
