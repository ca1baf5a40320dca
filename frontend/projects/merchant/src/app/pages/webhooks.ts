import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { RouterLink } from '@angular/router';

import { WebhookService, type WebhookEndpoint } from '@gen/paymesh/webhook/v1/webhook_pb';
import { TimePipe } from '@shared/format';
import { IdempotencyKey } from '@shared/idempotency';
import { describeError } from '@shared/rest';
import { EventsField } from '../events-field';
import { SecretPanel } from '../secret-panel';
import { Session } from '../session';

/** The most endpoints a merchant lists here (the API's page maximum). */
const PAGE_SIZE = 100;

/** The merchant's webhook endpoints in this mode, and the form that adds one. */
@Component({
  selector: 'pm-webhooks-page',
  imports: [FormsModule, RouterLink, MatButtonModule, MatFormFieldModule, MatInputModule, TimePipe, EventsField, SecretPanel],
  template: `
    <h1 class="page-title">Webhooks</h1>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    @if (created(); as e) {
      <pm-secret-panel [title]="'Endpoint ' + e.id + ' added.'" [secret]="e.secret" label="Signing secret"
                       (done)="created.set(null)">
        <a [routerLink]="['/webhooks', e.id]" data-testid="open-new-endpoint">Open the endpoint →</a>
      </pm-secret-panel>
    }
    @if (session.canDevelop()) {
      <section class="panel" aria-labelledby="add-title">
        <h2 id="add-title">Add an endpoint</h2>
        <form class="toolbar-row" (ngSubmit)="create()" (input)="key.reset()">
          <mat-form-field appearance="outline" subscriptSizing="dynamic" class="url">
            <mat-label>Endpoint URL</mat-label>
            <input matInput type="url" name="url" [(ngModel)]="url" required placeholder="https://example.com/webhooks" data-testid="endpoint-url">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Description</mat-label>
            <input matInput name="description" [(ngModel)]="description" data-testid="endpoint-description">
          </mat-form-field>
          <pm-events-field [value]="events()" (valueChange)="events.set($event); key.reset()" />
          <button mat-flat-button type="submit" [disabled]="busy()" data-testid="add-endpoint">Add endpoint</button>
        </form>
      </section>
    }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Webhook endpoints">
      <table data-testid="endpoints-table">
        <thead><tr><th>URL</th><th>Events</th><th>Status</th><th>Created</th></tr></thead>
        <tbody>
          @for (e of endpoints(); track e.id) {
            <tr [attr.data-testid]="'endpoint-' + e.id">
              <td><a [routerLink]="['/webhooks', e.id]" class="mono">{{ e.url }}</a>
                @if (e.description) { <br><span class="muted">{{ e.description }}</span> }</td>
              <td>{{ e.enabledEvents.join(', ') }}</td>
              <td><span class="status-chip" [class.failed]="e.status === 'disabled'">{{ e.status }}</span>
                @if (e.disabledReason) { <span class="muted"> ({{ e.disabledReason }})</span> }</td>
              <td>{{ e.createTime | time }}</td>
            </tr>
          } @empty {
            <tr><td colspan="4" class="muted">No endpoints in this mode.</td></tr>
          }
        </tbody>
      </table>
    </div>
  `,
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; vertical-align: top; }
    th { font-weight: 500; color: #545b69; }
    .url { width: 24rem; }
  `,
})
export class WebhooksPage implements OnInit {
  readonly session = inject(Session);
  readonly endpoints = signal<WebhookEndpoint[]>([]);
  readonly created = signal<WebhookEndpoint | null>(null);
  readonly events = signal<string[]>([]);
  readonly error = signal('');
  readonly busy = signal(false);
  url = '';
  description = '';
  /** One key per endpoint the user means to add. */
  readonly key = new IdempotencyKey();

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const response = await this.session.api(WebhookService.method.listWebhookEndpoints, { pageSize: PAGE_SIZE });
      this.endpoints.set(response.webhookEndpoints);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async create(): Promise<void> {
    if (this.busy()) return;
    if (!this.url.trim() || !this.events().length) {
      this.error.set('Enter the endpoint URL and pick at least one event type.');
      return;
    }
    this.busy.set(true);
    this.error.set('');
    try {
      const endpoint = await this.session.api(
        WebhookService.method.createWebhookEndpoint,
        { url: this.url.trim(), description: this.description.trim(), enabledEvents: this.events() },
        { idempotencyKey: this.key.get() },
      );
      this.key.reset();
      this.url = '';
      this.description = '';
      this.events.set([]);
      this.created.set(endpoint);
      await this.load();
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
