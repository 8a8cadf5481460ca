"use client";

import { Trash2 } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Checkbox } from "@/components/ui/checkbox";
import { cn } from "@/lib/utils";

export type Todo = {
  id: number;
  title: string;
  done: boolean;
};

type TodoItemProps = {
  todo: Todo;
  onToggle: (id: number) => void;
  onDelete: (id: number) => void;
};

export function TodoItem({ todo, onToggle, onDelete }: TodoItemProps) {
  const inputId = `todo-${todo.id}`;
  return (
    <li className="group flex items-center gap-3 rounded-lg border bg-background px-3 py-2 transition-colors hover:bg-muted/50">
      <Checkbox
        id={inputId}
        checked={todo.done}
        onCheckedChange={() => onToggle(todo.id)}
        aria-label={todo.done ? `Mark "${todo.title}" as active` : `Mark "${todo.title}" as done`}
      />
      <label
        htmlFor={inputId}
        className={cn(
          "flex-1 cursor-pointer text-sm",
          todo.done && "text-muted-foreground line-through"
        )}
      >
        {todo.title}
      </label>
      <Button
        variant="ghost"
        size="icon"
        onClick={() => onDelete(todo.id)}
        aria-label={`Delete "${todo.title}"`}
        className="opacity-60 group-hover:opacity-100"
      >
        <Trash2 className="size-4" />
      </Button>
    </li>
  );
}
