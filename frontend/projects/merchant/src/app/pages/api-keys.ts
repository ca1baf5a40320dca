import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatSelectModule } from '@angular/material/select';

import { AccountService } from '@gen/paymesh/admin/v1/account_pb';
import type { ApiKey } from '@gen/paymesh/admin/v1/admin_pb';
import { Actions } from '@shared/actions';
import { Confirm } from '@shared/confirm';
import { TimePipe } from '@shared/format';
import { IdempotencyKeys } from '@shared/idempotency';
import { describeError } from '@shared/rest';
import { ROLL_WINDOWS, keyState } from '../figures';
import { SecretPanel } from '../secret-panel';
import { Session } from '../session';

/** The merchant's API keys in this mode: create, roll with a window for the old key, revoke. */
@Component({
  selector: 'pm-api-keys-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatSelectModule, TimePipe, SecretPanel],
  template: `
    <h1 class="page-title">API keys <span class="muted">({{ session.mode() }} mode)</span></h1>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    @if (notice()) { <p role="status" data-testid="notice">{{ notice() }}</p> }
    @if (newKey(); as k) {
      <pm-secret-panel [title]="'New ' + k.mode + ' ' + k.kind + ' key ' + k.prefix + '….'" [secret]="k.key" label="API key"
                       (done)="newKey.set(null)" />
    }
    @if (session.canDevelop()) {
      <form class="toolbar-row" (ngSubmit)="create()">
        <mat-form-field appearance="outline" subscriptSizing="dynamic">
          <mat-label>Kind</mat-label>
          <mat-select name="kind" [(ngModel)]="kind" data-testid="key-kind">
            <mat-option value="secret">secret</mat-option>
            <mat-option value="publishable">publishable</mat-option>
          </mat-select>
        </mat-form-field>
        <button mat-flat-button type="submit" [disabled]="busy()" data-testid="create-key">Create {{ session.mode() }} key</button>
      </form>
    }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="API keys">
      <table data-testid="keys-table">
        <thead><tr><th>Key</th><th>Kind</th><th>Created</th><th>Status</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>
          @for (k of keys(); track k.id) {
            @let s = state(k);
            <tr [class.gone]="s.state === 'revoked' || s.state === 'expired'" [attr.data-testid]="'key-' + k.id" [attr.data-prefix]="k.prefix">
              <td class="mono">{{ k.prefix }}…</td>
              <td>{{ k.kind }}</td>
              <td>{{ k.createTime | time }}</td>
              <td data-testid="key-status">
                @switch (s.state) {
                  @case ('revoked') { revoked {{ k.revokeTime | time }} }
                  @case ('expired') { expired {{ k.expireTime | time }} }
                  @case ('expiring') { <span class="status-chip pending">expires {{ k.expireTime | time }}</span> }
                  @default { <span class="status-chip succeeded">active</span> }
                }
              </td>
              <td class="actions">
                @if (session.canDevelop() && (s.state === 'active' || s.state === 'expiring')) {
                  @if (s.state === 'active') {
                    <button mat-stroked-button type="button" (click)="rolling.set(rolling() === k.id ? null : k.id)"
                            [attr.aria-expanded]="rolling() === k.id" data-testid="roll">Roll…</button>
                  }
                  <button mat-button type="button" (click)="revoke(k)" [disabled]="busy()" data-testid="revoke">Revoke</button>
                }
              </td>
            </tr>
            @if (rolling() === k.id) {
              <tr class="roll-row">
                <td colspan="5">
                  <form class="toolbar-row" (ngSubmit)="roll(k)" [attr.aria-label]="'Roll ' + k.prefix">
                    <span>A new key replaces {{ k.prefix }}…; the old one keeps working for</span>
                    <mat-form-field appearance="outline" subscriptSizing="dynamic">
                      <mat-label>Old key works for</mat-label>
                      <mat-select name="window" [(ngModel)]="rollWindow" data-testid="roll-window">
                        @for (w of windows; track w.seconds) { <mat-option [value]="w.seconds">{{ w.label }}</mat-option> }
                      </mat-select>
                    </mat-form-field>
                    <button mat-flat-button type="submit" [disabled]="busy()" data-testid="roll-confirm">Roll key</button>
                    <button mat-button type="button" (click)="rolling.set(null)">Cancel</button>
                  </form>
                </td>
              </tr>
            }
          } @empty {
            <tr><td colspan="5" class="muted">No keys in this mode.</td></tr>
          }
        </tbody>
      </table>
    </div>
  `,
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; vertical-align: middle; }
    th { font-weight: 500; color: #545b69; }
    .gone td { color: #6b7080; }
    .roll-row > td { background: #f8f9fc; }
    .actions { white-space: nowrap; }
  `,
})
export class ApiKeysPage implements OnInit {
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly keys = signal<ApiKey[]>([]);
  readonly newKey = signal<ApiKey | null>(null);
  readonly rolling = signal<string | null>(null);
  private readonly actions = new Actions();
  readonly error = this.actions.error;
  readonly notice = this.actions.notice;
  readonly busy = this.actions.busy;
  readonly windows = ROLL_WINDOWS;
  kind = 'secret';
  rollWindow = 24 * 3600;
  private readonly idempotency = new IdempotencyKeys();

  ngOnInit(): void {
    void this.load();
  }

  state(key: ApiKey): ReturnType<typeof keyState> {
    return keyState(key, new Date());
  }

  async load(): Promise<void> {
    try {
      const response = await this.session.api(AccountService.method.listApiKeys, { mode: this.session.mode() });
      this.keys.set(response.apiKeys);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async create(): Promise<void> {
    const action = `create:${this.kind}`;
    await this.actions.run(async () => {
      const key = await this.session.api(
        AccountService.method.createApiKey,
        { mode: this.session.mode(), kind: this.kind },
        { idempotencyKey: this.idempotency.get(action) },
      );
      this.idempotency.done(action);
      this.newKey.set(key);
      await this.load();
    });
  }

  async roll(key: ApiKey): Promise<void> {
    const action = `roll:${key.id}:${this.rollWindow}`;
    await this.actions.run(async () => {
      const rolled = await this.session.api(
        AccountService.method.rollApiKey,
        { id: key.id, expireInSeconds: this.rollWindow },
        { idempotencyKey: this.idempotency.get(action) },
      );
      this.idempotency.done(action);
      this.rolling.set(null);
      this.newKey.set(rolled);
      await this.load();
    });
  }

  async revoke(key: ApiKey): Promise<void> {
    const confirmed = await this.confirm.ask({
      title: 'Revoke this API key?',
      message: `Revoke ${key.prefix}… (${key.mode}, ${key.kind})? Calls with this key will be refused within seconds; this cannot be undone.`,
      action: 'Revoke key',
    });
    if (!confirmed) return;
    const action = `revoke:${key.id}`;
    await this.actions.run(async () => {
      const revoked = await this.session.api(
        AccountService.method.revokeApiKey,
        { id: key.id },
        { idempotencyKey: this.idempotency.get(action) },
      );
      this.idempotency.done(action);
      this.keys.update((all) => all.map((k) => (k.id === revoked.id ? revoked : k)));
      if (this.newKey()?.id === revoked.id) this.newKey.set(null);
      this.notice.set(`Key ${revoked.prefix}… revoked.`);
    });
  }
}
