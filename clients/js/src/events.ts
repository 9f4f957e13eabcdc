/**
 * Typed events: an app's map from event name to the shape of that event's
 * frame, and the frame types the client derives from it. The map is the
 * app's own, usually the `RowcastEvents` interface that `rowcast types`
 * generates from its routes file and database; without one, every name is a
 * string and every `data` a record of unknown values. The client knows no
 * event names of its own.
 */

import type { EventFrame } from "./protocol.js";

/** What the map says about one event: its `data`, and `old` on updates. */
export interface EventShape {
  data: unknown;
  old?: unknown;
}

/**
 * A map from event name to its shape, written as a bound on the map itself
 * (`Events extends EventMap<Events>`), so that an `interface` such as the
 * generated `RowcastEvents`, which has no index signature, fits it.
 */
export type EventMap<Events> = { [Name in keyof Events]: EventShape };

/** The map of a client that was given none: any name, a record of unknown values. */
export type UntypedEvents = Record<string, { data: Record<string, unknown>; old?: Record<string, unknown> }>;

/**
 * The names `client.on` keeps for its own notifications (`status`, and
 * `event` for every frame). An event with one of these names is still
 * delivered to `subscribe` and to `on("event")`.
 */
export type ReservedName = "status" | "event";

/** The event names of a map. */
export type EventName<Events> = Extract<keyof Events, string>;

/** The `data` of a shape (a union when several routes share a name). */
export type DataOf<Shape> = Shape extends { data: infer Data } ? Data : never;

/** The `old` of a shape; `never` where the map says there is none. */
export type OldOf<Shape> = Shape extends { old?: infer Old } ? Exclude<Old, undefined> : never;

/**
 * A frame whose map entry says `old` is always there (a route on updates
 * only): the generated map's `old: <Event>Old`.
 */
export interface EventFrameWithOld<Data, Name extends string, Old> extends EventFrame<Data, Name, Old> {
  old: Old;
}

/** The frame of one shape under one name. */
type FrameOfShape<Shape, Name extends string> = Shape extends { old: infer Old }
  ? EventFrameWithOld<DataOf<Shape>, Name, Old>
  : EventFrame<DataOf<Shape>, Name, OldOf<Shape>>;

/**
 * The event frame of `Name` under `Events`, or, for a union of names (the
 * default: all of them), the union of their frames, which narrows when the
 * code checks `frame.event`.
 */
export type FrameOf<Events, Name extends EventName<Events> = EventName<Events>> = Name extends string
  ? FrameOfShape<Events[Name], Name>
  : never;

/** The names `client.on(name, handler)` takes for events: every name of the map but the reserved ones. */
export type ListenedName<Events> = Exclude<EventName<Events>, ReservedName>;
