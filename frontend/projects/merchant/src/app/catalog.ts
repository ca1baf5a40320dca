import { Injectable, inject, signal } from '@angular/core';

import { WebhookService, type EventTypeDefinition } from '@gen/paymesh/webhook/v1/webhook_pb';
import { Session } from './session';

/** The event type catalog (GET /v1/event_types), read once per page load: it is fixed. */
@Injectable({ providedIn: 'root' })
export class Catalog {
  private readonly session = inject(Session);
  private loading: Promise<void> | null = null;
  readonly types = signal<EventTypeDefinition[]>([]);

  /** Loads the catalog unless it is loaded or loading; rejects with the API's error. */
  load(): Promise<void> {
    this.loading ??= this.session.api(WebhookService.method.listEventTypes, {}).then(
      (catalog) => this.types.set(catalog.eventTypes),
      (error: unknown) => {
        this.loading = null;
        throw error;
      },
    );
    return this.loading;
  }
}
